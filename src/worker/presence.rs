//! Which workers are alive, from their own heartbeats: each worker process
//! renews a row in the `workers` table every few seconds, idle or busy, and
//! removes it when it stops. The API reports workers from here, never from
//! whether it runs one itself, and the `no_worker` alert fires from here.

use std::time::Duration;

use sqlx::Row;

use crate::db::Database;
use crate::domain::now_ms;

/// How often a worker renews its row.
pub const BEAT: Duration = Duration::from_secs(5);
/// A worker is live while its row is younger than this.
pub const LIVE_FOR: Duration = Duration::from_secs(15);

/// A worker as its last heartbeat described it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerInfo {
    pub id: String,
    pub concurrency: u64,
    pub active: u64,
    pub last_seen: i64,
}

#[derive(Debug, Clone)]
pub struct Presence {
    db: Database,
}

impl Presence {
    pub fn new(db: Database) -> Presence {
        Presence { db }
    }

    pub async fn beat(&self, id: &str, concurrency: usize, active: usize) -> Result<(), sqlx::Error> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO workers (id, concurrency, active, started_at, last_seen) VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (id) DO UPDATE SET concurrency = excluded.concurrency, active = excluded.active, \
             last_seen = excluded.last_seen",
        )
        .bind(id)
        .bind(concurrency as i64)
        .bind(active as i64)
        .bind(now)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    pub async fn leave(&self, id: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM workers WHERE id = $1").bind(id).execute(&self.db.pool).await?;
        Ok(())
    }

    /// Workers heard from within [`LIVE_FOR`].
    pub async fn live(&self) -> Result<Vec<WorkerInfo>, sqlx::Error> {
        let rows =
            sqlx::query("SELECT id, concurrency, active, last_seen FROM workers WHERE last_seen >= $1 ORDER BY id")
                .bind(now_ms() - LIVE_FOR.as_millis() as i64)
                .fetch_all(&self.db.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(WorkerInfo {
                    id: r.try_get("id")?,
                    concurrency: r.try_get::<i64, _>("concurrency")?.max(0) as u64,
                    active: r.try_get::<i64, _>("active")?.max(0) as u64,
                    last_seen: r.try_get("last_seen")?,
                })
            })
            .collect()
    }

    /// When any worker was last heard from, if ever.
    pub async fn last_seen(&self) -> Result<Option<i64>, sqlx::Error> {
        let row = sqlx::query("SELECT MAX(last_seen) AS seen FROM workers").fetch_one(&self.db.pool).await?;
        row.try_get("seen")
    }

    /// Forgets workers not heard from since `before_ms` (killed ones).
    pub async fn prune(&self, before_ms: i64) -> Result<u64, sqlx::Error> {
        let done =
            sqlx::query("DELETE FROM workers WHERE last_seen < $1").bind(before_ms).execute(&self.db.pool).await?;
        Ok(done.rows_affected())
    }
}
