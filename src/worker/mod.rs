//! The worker: claims jobs, runs them, and stops cleanly.
//!
//! A permit of the concurrency semaphore is taken *before* claiming, so a
//! worker never holds a lease on a job it has no capacity to run. Idle
//! workers poll, and are woken at once by an in-process upload ([`Wake`]).
//!
//! Shutdown: stop claiming, give running jobs `shutdown_grace` to finish,
//! then kill their ffmpeg and hand their jobs back without charging an
//! attempt, so another worker resumes them at once.

mod chunked;
mod job;
pub mod presence;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::domain::JobState;
use crate::lectures::{Failure, LectureStore};
use crate::publish::Storage;
use crate::queue::Queue;
use crate::transcode::chunks::Chunking;
use crate::transcode::plan::Ladder;
use crate::transcode::Transcoder;

/// Wakes idle workers in this process when a job is enqueued.
pub type Wake = Arc<Notify>;

/// Jobs running in this process, so an API request (delete, cancel) can stop
/// one at once instead of waiting for its next heartbeat.
#[derive(Debug, Clone, Default)]
pub struct RunningJobs(Arc<Mutex<HashMap<String, CancellationToken>>>);

impl RunningJobs {
    /// The map, even after a panic elsewhere poisoned the lock: it holds
    /// only tokens, which a half-done insert or remove cannot corrupt, and a
    /// request path must not panic on it.
    fn jobs(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn insert(&self, id: &str, token: CancellationToken) {
        self.jobs().insert(id.to_string(), token);
    }

    fn remove(&self, id: &str) {
        self.jobs().remove(id);
    }

    /// How many jobs run here now.
    pub fn len(&self) -> usize {
        self.jobs().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, id: &str) -> bool {
        self.jobs().contains_key(id)
    }

    /// Stops the job's ffmpeg and waits (up to `wait`) until the worker has
    /// cleaned up after it. Returns `false` if it was not running here.
    pub async fn stop(&self, id: &str, wait: Duration) -> bool {
        let token = self.jobs().get(id).cloned();
        let Some(token) = token else { return false };
        token.cancel();
        let deadline = tokio::time::Instant::now() + wait;
        while self.contains(id) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

/// Everything a worker needs; shared by its jobs.
pub struct WorkerContext {
    /// hostname:pid, shown in job details.
    pub id: String,
    pub queue: Arc<dyn Queue>,
    pub lectures: LectureStore,
    pub storage: Arc<dyn Storage>,
    pub transcoder: Transcoder,
    pub ladder: Ladder,
    /// This process's own work directory, `<data-dir>/work/<hostname>-<pid>`.
    pub work_dir: PathBuf,
    pub lease: Duration,
    /// How often an idle worker looks for work when nothing wakes it.
    pub poll_interval: Duration,
    /// How often the reconciler looks for unfinished lectures without a job.
    pub reconcile_interval: Duration,
    /// Attempts of jobs the reconciler enqueues.
    pub max_attempts: u32,
    /// When a lecture is split into chunks that many workers encode.
    pub chunking: Chunking,
    pub concurrency: usize,
    pub shutdown_grace: Duration,
    pub running: RunningJobs,
    pub wake: Wake,
    pub presence: presence::Presence,
}

/// This process's worker id: `hostname:pid`.
pub fn worker_id() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

/// Runs until `shutdown` is cancelled, then drains as described above.
pub async fn run(ctx: Arc<WorkerContext>, shutdown: CancellationToken) {
    tracing::info!(worker = %ctx.id, concurrency = ctx.concurrency, "worker started");
    remove_dead_work_dirs(&ctx.work_dir).await;
    let reconciler = tokio::spawn(reconcile_forever(ctx.clone(), shutdown.clone()));
    let heartbeat = tokio::spawn(announce_forever(ctx.clone()));
    let permits = Arc::new(Semaphore::new(ctx.concurrency));
    // Cancelled once the grace period is over: kills whatever still runs.
    let hard_stop = CancellationToken::new();
    let mut jobs = JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => permit.expect("semaphore is never closed"),
        };
        match claim(&ctx).await {
            Some(claim) => {
                let ctx = ctx.clone();
                let cancel = hard_stop.child_token();
                let hard_stop = hard_stop.clone();
                let draining = shutdown.clone();
                // The job gives the permit back when it ends, or earlier
                // when it stops encoding (a chunked lecture's joining job).
                jobs.spawn(async move { job::process(&ctx, claim, cancel, &hard_stop, &draining, permit).await });
            }
            None => {
                drop(permit);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = ctx.wake.notified() => {}
                    _ = tokio::time::sleep(ctx.poll_interval) => {}
                }
            }
        }
        // Reap finished tasks so the set does not grow without bound.
        while jobs.try_join_next().is_some() {}
    }

    tracing::info!(running = jobs.len(), grace = ?ctx.shutdown_grace, "worker stopping");
    let drained = tokio::time::timeout(ctx.shutdown_grace, async { while jobs.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(running = jobs.len(), "grace period over: stopping running jobs and handing them back");
        hard_stop.cancel();
        while jobs.join_next().await.is_some() {}
    }
    reconciler.abort();
    heartbeat.abort();
    if let Err(e) = ctx.presence.leave(&ctx.id).await {
        tracing::warn!(error = %e, "could not remove this worker from the worker list; it ages out");
    }
    tracing::info!("worker stopped");
}

/// Tells everyone this worker is alive, and how busy, every few seconds.
async fn announce_forever(ctx: Arc<WorkerContext>) {
    loop {
        if let Err(e) = ctx.presence.beat(&ctx.id, ctx.concurrency, ctx.running.len()).await {
            tracing::warn!(error = %e, "worker heartbeat failed");
        }
        tokio::time::sleep(presence::BEAT).await;
    }
}

/// Settles every unfinished lecture against its job:
/// - no job (a queue that lost its data, a crash between a lecture write and
///   a Redis enqueue): re-enqueued. Job ids are lecture ids, so racing
///   reconcilers enqueue a job once;
/// - a job failed for good by a path that could not record it on the lecture
///   (the lease reaper, after a worker died on the last attempt): the reason
///   is copied onto the lecture, so the failure outlives the job record and
///   the lecture is not scanned again.
pub async fn reconcile(ctx: &WorkerContext) -> Result<usize, String> {
    const PAGE: u32 = 500;
    let mut after = String::new();
    let mut enqueued = 0;
    loop {
        let ids = ctx.lectures.unfinished_ids(&after, PAGE).await.map_err(|e| e.to_string())?;
        let Some(last) = ids.last() else { return Ok(enqueued) };
        after = last.clone();
        let jobs = ctx.queue.get_many(&ids).await.map_err(|e| e.to_string())?;
        for job in jobs.iter().filter(|j| matches!(j.state, JobState::Failed | JobState::Cancelled)) {
            let failure = Failure::of(job);
            ctx.lectures.record_failure(&job.id, failure).await.map_err(|e| e.to_string())?;
            tracing::info!(lecture = %job.id, reason = failure.text(), "recorded the job's failure on its lecture");
        }
        let live: std::collections::HashSet<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        for id in ids.iter().filter(|id| !live.contains(id.as_str())) {
            let options =
                crate::queue::EnqueueOptions { priority: 0, delay: Duration::ZERO, max_attempts: ctx.max_attempts };
            ctx.queue.enqueue(id, &options).await.map_err(|e| e.to_string())?;
            tracing::warn!(lecture = %id, "lecture had no job; re-enqueued");
            enqueued += 1;
        }
        if enqueued > 0 {
            ctx.wake.notify_one();
        }
    }
}

async fn reconcile_forever(ctx: Arc<WorkerContext>, shutdown: CancellationToken) {
    loop {
        if let Err(e) = reconcile(&ctx).await {
            tracing::warn!(error = %e, "reconciliation failed; will try again");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(ctx.reconcile_interval) => {}
        }
    }
}

fn hostname() -> String {
    hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_else(|_| "unknown".into())
}

/// This process's work directory name, `<hostname>-<pid>`: unique among
/// processes sharing a data directory, even across hosts or containers.
pub fn work_dir_name() -> String {
    format!("{}-{}", hostname().replace(['/', '\\'], "_"), std::process::id())
}

/// Whether a process with this pid runs on this host (any Unix, no /proc):
/// signal 0 checks without sending; EPERM means it exists but is not ours.
fn process_exists(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    // SAFETY: kill with signal 0 only checks the pid; it has no effect.
    unsafe { libc::kill(pid, 0) == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) }
}

/// Work files of worker processes on this host that died without cleaning
/// up (kill -9, power loss). Only this host's directories are judged, by
/// whether their pid still runs here; other hosts' are never touched.
async fn remove_dead_work_dirs(own: &std::path::Path) {
    let Some(parent) = own.parent() else { return };
    let Ok(mut entries) = tokio::fs::read_dir(parent).await else { return };
    let host = format!("{}-", hostname().replace(['/', '\\'], "_"));
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name().to_string_lossy().into_owned();
        let dead = match name.strip_prefix(&host).and_then(|pid| pid.parse::<u32>().ok()) {
            Some(pid) => pid == std::process::id() || !process_exists(pid),
            None => false,
        };
        if dead {
            let _ = tokio::fs::remove_dir_all(entry.path()).await;
        }
    }
}

/// Turns PostgreSQL `NOTIFY vidpipe_jobs` into wake-ups, so workers in
/// other processes than the API start new jobs at once. Polling remains the
/// fallback while the listener reconnects.
pub async fn listen_for_jobs(database_url: String, wake: Wake, shutdown: CancellationToken) {
    use sqlx::postgres::PgListener;
    while !shutdown.is_cancelled() {
        let mut listener = match PgListener::connect(&database_url).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot LISTEN for jobs; polling only, retrying in 5s");
                tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(5)) => continue }
            }
        };
        if let Err(e) = listener.listen(crate::queue::sql::JOBS_CHANNEL).await {
            tracing::warn!(error = %e, "LISTEN failed");
            continue;
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                received = listener.recv() => match received {
                    Ok(_) => wake.notify_one(),
                    Err(e) => {
                        tracing::warn!(error = %e, "job notifications interrupted; reconnecting");
                        break;
                    }
                },
            }
        }
    }
}

async fn claim(ctx: &WorkerContext) -> Option<crate::queue::Claim> {
    if let Err(e) = ctx.queue.reap_expired().await {
        tracing::warn!(error = %e, "could not recover expired leases");
    }
    match ctx.queue.claim(&ctx.id, ctx.lease).await {
        Ok(claim) => claim,
        Err(e) => {
            tracing::warn!(error = %e, "could not claim a job");
            None
        }
    }
}
