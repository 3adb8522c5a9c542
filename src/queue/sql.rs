//! The queue in SQL: SQLite or PostgreSQL, in the same database as lectures.
//!
//! Every state change is one UPDATE whose WHERE clause states the rule it
//! enforces (the job is in the expected state, the lease token matches), so
//! a change either happens whole or not at all. The one read-then-write,
//! appending to a job's error history, is guarded by the same lease token:
//! only the holder of the lease writes it.
//! Times that decide leases and due dates come from the database's clock on
//! PostgreSQL (workers on several machines may disagree by seconds); SQLite
//! is one machine, whose clock every process shares.
//! Claiming differs per dialect: PostgreSQL locks the candidate row with
//! `FOR UPDATE SKIP LOCKED` so concurrent workers pick different jobs; SQLite
//! runs one writer at a time, which gives the same guarantee.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{AttemptError, Backoff, Claim, Counts, EnqueueOptions, FailOutcome, JobRecord, Queue, QueueError};
use crate::db::{Database, Dialect};
use crate::domain::{now_ms, JobState};

#[derive(Debug, Clone)]
pub struct SqlQueue {
    db: Database,
    backoff: Backoff,
}

const JOB_COLUMNS: &str = "id, state, priority, attempts, max_attempts, run_at, worker_id, lease_until, progress, \
     last_error, errors, created_at, updated_at, started_at, finished_at";

/// States a worker may claim from.
const RUNNABLE: &str = "(:waiting, :delayed)";

/// `sql` with each `:state` (`:waiting`, `:active`...) replaced by that
/// state's stored text: the text of a state is written once, in
/// `JobState::as_str`, and read back by its `FromStr`.
fn states(sql: &str) -> String {
    JobState::ALL.iter().fold(sql.to_string(), |sql, state| {
        sql.replace(&format!(":{}", state.as_str()), &format!("'{}'", state.as_str()))
    })
}

impl SqlQueue {
    pub fn new(db: Database, backoff: Backoff) -> SqlQueue {
        SqlQueue { db, backoff }
    }

    /// The database the jobs are in.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Inserts a job on an open connection or transaction, so that callers
    /// can enqueue in the same transaction as the record the job is for.
    pub async fn enqueue_on(
        conn: &mut AnyConnection,
        dialect: Dialect,
        id: &str,
        options: &EnqueueOptions,
    ) -> Result<(), QueueError> {
        let now = clock(conn, dialect).await?;
        let delay_ms = options.delay.as_millis() as i64;
        let state = if delay_ms > 0 { JobState::Delayed } else { JobState::Waiting };
        sqlx::query(
            "INSERT INTO jobs (id, state, priority, attempts, max_attempts, run_at, created_at, updated_at, seq) \
             VALUES ($1, $2, $3, 0, $4, $5, $6, $6, (SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs))",
        )
        .bind(id)
        .bind(state.as_str())
        .bind(options.priority)
        .bind(options.max_attempts as i64)
        .bind(now + delay_ms)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        notify(conn, dialect).await
    }

    /// Completes a job on an open transaction, so the caller can store the
    /// job's result in the same transaction. `false`: the lease was lost.
    pub async fn complete_on(conn: &mut AnyConnection, claim: &Claim) -> Result<bool, QueueError> {
        let now = now_ms();
        let done = sqlx::query(&states(
            "UPDATE jobs SET state = :completed, progress = 100, lease_token = NULL, lease_until = NULL, \
                 last_error = NULL, finished_at = $1, updated_at = $1 \
             WHERE id = $2 AND lease_token = $3 AND state = :active",
        ))
        .bind(now)
        .bind(&claim.job_id)
        .bind(&claim.token)
        .execute(&mut *conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn now(&self) -> Result<i64, QueueError> {
        match self.db.dialect {
            Dialect::Postgres => clock(&mut *self.db.pool.acquire().await?, Dialect::Postgres).await,
            Dialect::Sqlite => Ok(now_ms()),
        }
    }

    /// Removes a job on an open transaction (with the record it is for).
    pub async fn remove_on(conn: &mut AnyConnection, id: &str) -> Result<bool, QueueError> {
        let done = sqlx::query("DELETE FROM jobs WHERE id = $1").bind(id).execute(&mut *conn).await?;
        Ok(done.rows_affected() == 1)
    }

    /// Appends one attempt's error to the job's history, under the claim.
    async fn record_error(&self, claim: &Claim, worker: &str, error: &str) -> Result<bool, QueueError> {
        let row = sqlx::query("SELECT errors FROM jobs WHERE id = $1 AND lease_token = $2")
            .bind(&claim.job_id)
            .bind(&claim.token)
            .fetch_optional(&self.db.pool)
            .await?;
        let Some(row) = row else { return Ok(false) };
        let mut errors: Vec<AttemptError> =
            serde_json::from_str(&row.try_get::<String, _>("errors")?).unwrap_or_default();
        errors.push(AttemptError {
            attempt: claim.attempt,
            error: error.to_string(),
            at: now_ms(),
            worker: Some(worker.to_string()),
        });
        let updated = sqlx::query("UPDATE jobs SET errors = $1 WHERE id = $2 AND lease_token = $3")
            .bind(serde_json::to_string(&errors).expect("errors serialize"))
            .bind(&claim.job_id)
            .bind(&claim.token)
            .execute(&self.db.pool)
            .await?;
        Ok(updated.rows_affected() == 1)
    }
}

/// Now, in milliseconds since the epoch, by the clock all workers share.
async fn clock(conn: &mut AnyConnection, dialect: Dialect) -> Result<i64, QueueError> {
    match dialect {
        Dialect::Postgres => {
            let row = sqlx::query("SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) AS now")
                .fetch_one(&mut *conn)
                .await?;
            Ok(row.try_get("now")?)
        }
        Dialect::Sqlite => Ok(now_ms()),
    }
}

/// PostgreSQL channel on which idle workers wait for new work.
pub const JOBS_CHANNEL: &str = "vidpipe_jobs";

/// Wakes idle PostgreSQL workers (`LISTEN vidpipe_jobs`). Inside a
/// transaction the notification is delivered at commit, with the job.
async fn notify(conn: &mut AnyConnection, dialect: Dialect) -> Result<(), QueueError> {
    if dialect == Dialect::Postgres {
        sqlx::query(&format!("NOTIFY {JOBS_CHANNEL}")).execute(&mut *conn).await?;
    }
    Ok(())
}

/// A stored state, read back through the one mapping (`JobState`'s `FromStr`).
fn parse_state(text: &str) -> Result<JobState, QueueError> {
    text.parse().map_err(|e: crate::domain::InvalidValue| QueueError::Corrupt(e.0))
}

fn job_from_row(row: &AnyRow) -> Result<JobRecord, QueueError> {
    let state: String = row.try_get("state")?;
    let errors: String = row.try_get("errors")?;
    Ok(JobRecord {
        id: row.try_get("id")?,
        state: parse_state(&state)?,
        priority: row.try_get("priority")?,
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        max_attempts: row.try_get::<i64, _>("max_attempts")? as u32,
        run_at: row.try_get("run_at")?,
        worker_id: row.try_get("worker_id")?,
        lease_until: row.try_get("lease_until")?,
        progress: row.try_get("progress")?,
        last_error: row.try_get("last_error")?,
        errors: serde_json::from_str(&errors).map_err(|e| QueueError::Corrupt(format!("errors of job: {e}")))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

#[async_trait]
impl Queue for SqlQueue {
    async fn enqueue(&self, id: &str, options: &EnqueueOptions) -> Result<(), QueueError> {
        let mut conn = self.db.pool.acquire().await?;
        SqlQueue::enqueue_on(&mut conn, self.db.dialect, id, options).await
    }

    async fn claim(&self, worker: &str, lease: Duration) -> Result<Option<Claim>, QueueError> {
        let now = self.now().await?;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let lock = match self.db.dialect {
            Dialect::Postgres => "FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let query = states(&format!(
            "UPDATE jobs SET state = :active, attempts = attempts + 1, lease_token = $1, lease_until = $2, \
                 worker_id = $3, progress = 0, started_at = COALESCE(started_at, $4), updated_at = $4 \
             WHERE id = (SELECT id FROM jobs WHERE state IN {RUNNABLE} AND run_at <= $4 \
                         ORDER BY priority, seq, id LIMIT 1 {lock}) \
               AND state IN {RUNNABLE} \
               AND NOT EXISTS (SELECT 1 FROM queue_flags WHERE name = 'paused' AND value = 1) \
             RETURNING id, attempts"
        ));
        let row = sqlx::query(&query)
            .bind(&token)
            .bind(now + lease.as_millis() as i64)
            .bind(worker)
            .bind(now)
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(match row {
            Some(row) => {
                Some(Claim { job_id: row.try_get("id")?, attempt: row.try_get::<i64, _>("attempts")? as u32, token })
            }
            None => None,
        })
    }

    async fn heartbeat(&self, claim: &Claim, lease: Duration, progress: f64) -> Result<bool, QueueError> {
        let now = self.now().await?;
        let done = sqlx::query(&states(
            "UPDATE jobs SET lease_until = $1, progress = $2, updated_at = $3 \
             WHERE id = $4 AND lease_token = $5 AND state = :active",
        ))
        .bind(now + lease.as_millis() as i64)
        .bind(progress.clamp(0.0, 100.0))
        .bind(now)
        .bind(&claim.job_id)
        .bind(&claim.token)
        .execute(&self.db.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn complete(&self, claim: &Claim) -> Result<bool, QueueError> {
        let mut conn = self.db.pool.acquire().await?;
        SqlQueue::complete_on(&mut conn, claim).await
    }

    async fn fail(&self, claim: &Claim, worker: &str, error: &str, retryable: bool) -> Result<FailOutcome, QueueError> {
        if !self.record_error(claim, worker, error).await? {
            return Ok(FailOutcome::LeaseLost);
        }
        let now = self.now().await?;
        let retry_at = now + self.backoff.delay(claim.attempt).as_millis() as i64;
        let row = sqlx::query(&states(
            "UPDATE jobs SET \
                 state = CASE WHEN $1 = 1 AND attempts < max_attempts THEN :delayed ELSE :failed END, \
                 run_at = CASE WHEN $1 = 1 AND attempts < max_attempts THEN $2 ELSE run_at END, \
                 finished_at = CASE WHEN $1 = 1 AND attempts < max_attempts THEN NULL ELSE $3 END, \
                 last_error = $4, lease_token = NULL, lease_until = NULL, updated_at = $3 \
             WHERE id = $5 AND lease_token = $6 AND state = :active \
             RETURNING state",
        ))
        .bind(retryable as i64)
        .bind(retry_at)
        .bind(now)
        .bind(error)
        .bind(&claim.job_id)
        .bind(&claim.token)
        .fetch_optional(&self.db.pool)
        .await?;
        let state = row.map(|r| r.try_get::<String, _>("state")).transpose()?.map(|s| parse_state(&s)).transpose()?;
        Ok(match state {
            Some(JobState::Delayed) => FailOutcome::RetryAt(retry_at),
            Some(_) => FailOutcome::Failed,
            None => FailOutcome::LeaseLost,
        })
    }

    async fn release(&self, claim: &Claim) -> Result<(), QueueError> {
        sqlx::query(&states(
            "UPDATE jobs SET state = :waiting, attempts = attempts - 1, lease_token = NULL, lease_until = NULL, \
                 worker_id = NULL, run_at = $1, updated_at = $1 \
             WHERE id = $2 AND lease_token = $3 AND state = :active",
        ))
        .bind(self.now().await?)
        .bind(&claim.job_id)
        .bind(&claim.token)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    async fn reap_expired(&self) -> Result<u64, QueueError> {
        let now = self.now().await?;
        let done = sqlx::query(&states(
            "UPDATE jobs SET \
                 state = CASE WHEN attempts < max_attempts THEN :waiting ELSE :failed END, \
                 finished_at = CASE WHEN attempts < max_attempts THEN NULL ELSE $1 END, \
                 last_error = 'the worker running it stopped renewing its lease (crashed or lost)', \
                 lease_token = NULL, lease_until = NULL, run_at = $1, updated_at = $1 \
             WHERE state = :active AND lease_until < $1",
        ))
        .bind(now)
        .execute(&self.db.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn cancel(&self, id: &str) -> Result<bool, QueueError> {
        let now = self.now().await?;
        let done = sqlx::query(&states(
            "UPDATE jobs SET state = :cancelled, lease_token = NULL, lease_until = NULL, \
                 last_error = :cancelled, finished_at = $1, updated_at = $1 \
             WHERE id = $2 AND state IN (:waiting, :delayed, :active)",
        ))
        .bind(now)
        .bind(id)
        .execute(&self.db.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn retry(&self, id: &str) -> Result<bool, QueueError> {
        let now = self.now().await?;
        let done = sqlx::query(&states(
            "UPDATE jobs SET state = :waiting, attempts = 0, run_at = $1, progress = 0, finished_at = NULL, \
                 last_error = NULL, updated_at = $1 \
             WHERE id = $2 AND state IN (:failed, :cancelled)",
        ))
        .bind(now)
        .bind(id)
        .execute(&self.db.pool)
        .await?;
        if done.rows_affected() == 1 {
            notify(&mut *self.db.pool.acquire().await?, self.db.dialect).await?;
        }
        Ok(done.rows_affected() == 1)
    }

    async fn remove(&self, id: &str) -> Result<bool, QueueError> {
        SqlQueue::remove_on(&mut *self.db.pool.acquire().await?, id).await
    }

    async fn get(&self, id: &str) -> Result<Option<JobRecord>, QueueError> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn get_many(&self, ids: &[String]) -> Result<Vec<JobRecord>, QueueError> {
        let mut jobs = Vec::with_capacity(ids.len());
        // Chunks keep the statement under every driver's parameter limit.
        for chunk in ids.chunks(100) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id IN ({})", placeholders.join(", "));
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(&self.db.pool).await? {
                jobs.push(job_from_row(&row)?);
            }
        }
        Ok(jobs)
    }

    async fn position(&self, id: &str) -> Result<Option<u64>, QueueError> {
        let row = sqlx::query(&states(&format!(
            "SELECT COUNT(*) AS ahead FROM jobs o, jobs j \
             WHERE j.id = $1 AND j.state IN {RUNNABLE} AND o.state IN {RUNNABLE} AND o.id <> j.id \
               AND (o.priority < j.priority OR (o.priority = j.priority AND \
                    (o.seq < j.seq OR (o.seq = j.seq AND o.id < j.id))))"
        )))
        .bind(id)
        .fetch_one(&self.db.pool)
        .await?;
        let ahead: i64 = row.try_get("ahead")?;
        match self.get(id).await? {
            Some(job) if matches!(job.state, JobState::Waiting | JobState::Delayed) => Ok(Some(ahead as u64)),
            _ => Ok(None),
        }
    }

    async fn counts(&self) -> Result<Counts, QueueError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state").fetch_all(&self.db.pool).await?;
        let mut counts = Counts::default();
        for row in rows {
            let n = row.try_get::<i64, _>("n")? as u64;
            match parse_state(&row.try_get::<String, _>("state")?)? {
                JobState::Waiting => counts.waiting += n,
                JobState::Active => counts.active += n,
                JobState::Delayed => counts.delayed += n,
                JobState::Completed => counts.completed += n,
                JobState::Failed => counts.failed += n,
                JobState::Cancelled => counts.cancelled += n,
            }
        }
        Ok(counts)
    }

    async fn set_paused(&self, paused: bool) -> Result<(), QueueError> {
        sqlx::query(
            "INSERT INTO queue_flags (name, value) VALUES ('paused', $1) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(paused as i64)
        .execute(&self.db.pool)
        .await?;
        if !paused {
            notify(&mut *self.db.pool.acquire().await?, self.db.dialect).await?;
        }
        Ok(())
    }

    async fn is_paused(&self) -> Result<bool, QueueError> {
        let row =
            sqlx::query("SELECT value FROM queue_flags WHERE name = 'paused'").fetch_optional(&self.db.pool).await?;
        Ok(match row {
            Some(row) => row.try_get::<i64, _>("value")? == 1,
            None => false,
        })
    }

    async fn list(&self, state: JobState, limit: u32, offset: u64) -> Result<Vec<JobRecord>, QueueError> {
        let order = match state {
            JobState::Waiting => "priority, seq, id",
            JobState::Delayed => "run_at, id",
            JobState::Active => "lease_until, id",
            JobState::Completed | JobState::Failed | JobState::Cancelled => "finished_at DESC, id DESC",
        };
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE state = $1 ORDER BY {order} LIMIT $2 OFFSET $3"
        ))
        .bind(state.as_str())
        .bind(limit as i64)
        .bind(offset as i64)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn clean(&self, state: JobState, before_ms: i64) -> Result<Vec<String>, QueueError> {
        let rows = sqlx::query("DELETE FROM jobs WHERE state = $1 AND finished_at < $2 RETURNING id")
            .bind(state.as_str())
            .bind(before_ms)
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(|r| r.try_get::<String, _>("id").map_err(QueueError::from)).collect()
    }

    async fn page(
        &self,
        state: Option<JobState>,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<JobRecord>, QueueError> {
        // Placeholders are numbered as they are added: only the filters given
        // are in the query, so neither database has to type a NULL parameter.
        let mut filters = Vec::new();
        if state.is_some() {
            filters.push(format!("state = ${}", filters.len() + 1));
        }
        if before.is_some() {
            filters.push(format!("id < ${}", filters.len() + 1));
        }
        let filter = if filters.is_empty() { String::new() } else { format!("WHERE {}", filters.join(" AND ")) };
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs {filter} ORDER BY id DESC LIMIT ${}", filters.len() + 1);
        let mut query = sqlx::query(&sql);
        if let Some(state) = state {
            query = query.bind(state.as_str());
        }
        if let Some(before) = before {
            query = query.bind(before);
        }
        let rows = query.bind(limit as i64).fetch_all(&self.db.pool).await?;
        rows.iter().map(job_from_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_tokens_become_the_texts_databases_hold() {
        assert_eq!(
            states("state IN (:waiting, :delayed) AND last_error = :cancelled"),
            "state IN ('waiting', 'delayed') AND last_error = 'cancelled'"
        );
        // Rows already stored hold these texts: changing one strands them.
        let stored: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(stored, ["waiting", "active", "delayed", "completed", "failed", "cancelled"]);
        for state in JobState::ALL {
            assert_eq!(parse_state(state.as_str()).unwrap(), state);
        }
        assert!(matches!(parse_state("running"), Err(QueueError::Corrupt(_))));
    }
}
