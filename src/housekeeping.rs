//! Scheduled cleanup: old job records, old events and webhook deliveries,
//! workers that stopped without saying so, uploaded sources past their
//! retention, and expired resumable uploads.
//!
//! Every process runs the timer; a lease in the `locks` table lets one of
//! them do the work each round, however many workers share the database.
//! Lectures keep their outcome when their job record goes (a failure is
//! copied onto the lecture first), so cleaning never changes what the API
//! says about a lecture.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::CleanPolicy;
use crate::db::Database;
use crate::domain::{now_ms, JobState};
use crate::events::{webhooks, EventLog};
use crate::ingest::direct::DirectUploads;
use crate::ingest::resumable::PartialUploads;
use crate::ingest::retention::Retention;
use crate::lectures::{Failure, LectureStore};
use crate::queue::Queue;
use crate::worker::presence::Presence;

const LOCK: &str = "housekeeping";
/// Events are kept this long: an SSE client can resume within it, and a
/// webhook retried for a day still finds its event.
pub const EVENT_RETENTION: Duration = Duration::from_secs(25 * 3600);
/// Delivered and dead webhook deliveries are listed this long.
const DELIVERY_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Workers silent this long are forgotten.
const WORKER_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// What [`clean_jobs`] removed.
#[derive(Debug, Default, serde::Serialize)]
pub struct Cleaned {
    pub completed: Vec<String>,
    pub failed: Vec<String>,
}

/// Removes completed job records older than `completed_after` and failed or
/// cancelled ones older than `failed_after`, recording each failure on its
/// lecture first.
pub async fn clean_jobs(
    queue: &dyn Queue,
    lectures: &LectureStore,
    completed_after: Duration,
    failed_after: Duration,
) -> Result<Cleaned, String> {
    let cutoff = |age: Duration| now_ms() - age.as_millis() as i64;
    for state in [JobState::Failed, JobState::Cancelled] {
        let mut offset = 0;
        loop {
            let page = queue.list(state, 500, offset).await.map_err(|e| e.to_string())?;
            for job in page.iter().filter(|j| j.finished_at.is_some_and(|t| t < cutoff(failed_after))) {
                lectures.set_failed(&job.id, Some(Failure::of(job).text())).await.map_err(|e| e.to_string())?;
            }
            if page.len() < 500 {
                break;
            }
            offset += 500;
        }
    }
    let completed = queue.clean(JobState::Completed, cutoff(completed_after)).await.map_err(|e| e.to_string())?;
    let mut failed = queue.clean(JobState::Failed, cutoff(failed_after)).await.map_err(|e| e.to_string())?;
    failed.extend(queue.clean(JobState::Cancelled, cutoff(failed_after)).await.map_err(|e| e.to_string())?);
    Ok(Cleaned { completed, failed })
}

/// Takes the named lease for `hold` unless another holder's is still valid.
pub async fn try_lock(db: &Database, name: &str, holder: &str, hold: Duration) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    let taken = sqlx::query(
        "INSERT INTO locks (name, holder, until) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
         WHERE locks.until < $4 OR locks.holder = $2",
    )
    .bind(name)
    .bind(holder)
    .bind(now + hold.as_millis() as i64)
    .bind(now)
    .execute(&db.pool)
    .await?;
    Ok(taken.rows_affected() == 1)
}

pub struct Housekeeping {
    pub db: Database,
    pub queue: Arc<dyn Queue>,
    pub lectures: LectureStore,
    pub events: EventLog,
    pub presence: Presence,
    pub retention: Retention,
    /// Resumable uploads, removed once expired.
    pub partial_uploads: PartialUploads,
    pub direct_uploads: DirectUploads,
    pub policy: CleanPolicy,
    /// This process, as lock holder.
    pub holder: String,
}

impl Housekeeping {
    /// Rounds at the clean interval, or twice per source-retention period if
    /// that is shorter, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let every = self
            .policy
            .interval
            .min(self.retention.failed_source_retention / 2)
            .min(self.partial_uploads.expiry() / 2)
            .max(Duration::from_millis(100));
        loop {
            // The lease outlives the round's work but not the next round.
            match try_lock(&self.db, LOCK, &self.holder, every.mul_f64(0.9)).await {
                Ok(true) => self.round().await,
                Ok(false) => tracing::debug!("another process cleans this round"),
                Err(e) => tracing::warn!(error = %e, "cannot take the cleanup lock"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    async fn round(&self) {
        let p = &self.policy;
        match clean_jobs(self.queue.as_ref(), &self.lectures, p.completed_after, p.failed_after).await {
            Ok(c) if !c.completed.is_empty() || !c.failed.is_empty() => {
                tracing::info!(completed = c.completed.len(), failed = c.failed.len(), "old job records removed")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot clean old job records"),
        }
        match self.retention.sweep().await {
            Ok(swept) if swept.failed_sources + swept.orphans > 0 => tracing::info!(?swept, "old uploads removed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot sweep old uploads"),
        }
        match self.partial_uploads.remove_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(uploads = n, "expired resumable uploads removed"),
            Err(e) => tracing::warn!(error = %e, "cannot remove expired resumable uploads"),
        }
        match self.direct_uploads.remove_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(urls = n, "expired direct upload URLs forgotten"),
            Err(e) => tracing::warn!(error = %e, "cannot forget expired direct upload URLs"),
        }
        let now = now_ms();
        let ago = |d: Duration| now - d.as_millis() as i64;
        if let Err(e) = self.events.prune(ago(EVENT_RETENTION)).await {
            tracing::warn!(error = %e, "cannot prune old events");
        }
        if let Err(e) = webhooks::prune(&self.events, ago(DELIVERY_RETENTION)).await {
            tracing::warn!(error = %e, "cannot prune old webhook deliveries");
        }
        if let Err(e) = self.presence.prune(ago(WORKER_RETENTION)).await {
            tracing::warn!(error = %e, "cannot forget old workers");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_at_a_time_until_the_lease_ends() {
        let (_dir, db) = crate::db::scratch().await;
        let hold = Duration::from_millis(300);
        assert!(try_lock(&db, "chore", "a", hold).await.unwrap());
        assert!(!try_lock(&db, "chore", "b", hold).await.unwrap(), "b waits while a holds it");
        assert!(try_lock(&db, "chore", "a", hold).await.unwrap(), "a renews its own");
        tokio::time::sleep(hold + Duration::from_millis(50)).await;
        assert!(try_lock(&db, "chore", "b", hold).await.unwrap(), "b takes over an expired lease");
        assert!(!try_lock(&db, "chore", "a", hold).await.unwrap());
    }
}
