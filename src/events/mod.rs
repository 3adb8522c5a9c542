//! What happens to lectures, as a durable, ordered log: the outbox behind
//! server-sent events (`http/events.rs`) and webhooks ([`webhooks`]).
//!
//! Every change is a row in the `events` table, written in the same
//! transaction as the change itself where the change is a SQL write (upload,
//! completion, deletion), so no reader ever sees a change without its event
//! or an event without its change, and a process killed after the commit
//! loses nothing. Rows get `seq = MAX(seq) + 1` under a table lock held to
//! the commit, so they become visible in `seq` order: a reader that resumes
//! after a seq (an SSE client's `Last-Event-ID`, the webhook dispatcher's
//! cursor) misses nothing.
//!
//! Readers in other processes see new rows by polling, woken early by
//! PostgreSQL `NOTIFY` (or, in one process, by a `Notify`): the worker that
//! writes an event need not be the API process that streams it.

pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;

use crate::db::{Database, Dialect};
use crate::domain::now_ms;

/// PostgreSQL channel that announces new events.
pub const NOTIFY_CHANNEL: &str = "vidpipe_events";
/// How often a feed looks for new events when nothing wakes it.
const POLL: Duration = Duration::from_millis(250);

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Uploaded,
    Processing,
    Progress,
    Playable,
    Completed,
    Failed,
    Deleted,
    /// The published caption tracks changed.
    Captions,
    AlertFiring,
    AlertResolved,
}

impl EventKind {
    pub const ALL: [EventKind; 10] = [
        EventKind::Uploaded,
        EventKind::Processing,
        EventKind::Progress,
        EventKind::Playable,
        EventKind::Completed,
        EventKind::Failed,
        EventKind::Deleted,
        EventKind::Captions,
        EventKind::AlertFiring,
        EventKind::AlertResolved,
    ];

    /// The name clients see (SSE `event:`, the webhook `type`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Uploaded => "lecture.uploaded",
            EventKind::Processing => "lecture.processing",
            EventKind::Progress => "lecture.progress",
            EventKind::Playable => "lecture.playable",
            EventKind::Completed => "lecture.completed",
            EventKind::Failed => "lecture.failed",
            EventKind::Deleted => "lecture.deleted",
            EventKind::Captions => "lecture.captions",
            EventKind::AlertFiring => "alert.firing",
            EventKind::AlertResolved => "alert.resolved",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Progress is for live viewers only; webhooks get the milestones.
    pub fn goes_to_webhooks(self) -> bool {
        self != EventKind::Progress
    }
}

/// One row of the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub seq: i64,
    pub kind: EventKind,
    pub lecture_id: Option<String>,
    pub payload: Value,
    pub created_at: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("event log: {0}")]
pub struct EventError(#[from] sqlx::Error);

/// The `events` table.
#[derive(Debug, Clone)]
pub struct EventLog {
    db: Database,
    /// Wakes this process's feed at once after an append.
    appended: Arc<Notify>,
}

impl EventLog {
    pub fn new(db: Database) -> EventLog {
        EventLog { db, appended: Arc::default() }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Appends an event in a transaction of its own.
    pub async fn append(&self, kind: EventKind, lecture_id: Option<&str>, payload: Value) -> Result<(), EventError> {
        let mut tx = self.db.pool.begin().await?;
        self.append_on(&mut tx, kind, lecture_id, payload).await?;
        tx.commit().await?;
        self.appended.notify_waiters();
        Ok(())
    }

    /// Appends an event on the caller's open transaction (visible at its
    /// commit). The caller should call [`EventLog::appended`] after it.
    pub async fn append_on(
        &self,
        conn: &mut AnyConnection,
        kind: EventKind,
        lecture_id: Option<&str>,
        payload: Value,
    ) -> Result<(), EventError> {
        if self.db.dialect == Dialect::Postgres {
            // Held to the commit: the next appender waits, so seq order is
            // commit order. SQLite has one writer at a time anyway.
            sqlx::query("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE").execute(&mut *conn).await?;
        }
        sqlx::query(
            "INSERT INTO events (seq, kind, lecture_id, payload, created_at) \
             SELECT COALESCE(MAX(seq), 0) + 1, $1, $2, $3, $4 FROM events",
        )
        .bind(kind.as_str())
        .bind(lecture_id.map(str::to_string))
        .bind(payload.to_string())
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
        if self.db.dialect == Dialect::Postgres {
            sqlx::query(&format!("NOTIFY {NOTIFY_CHANNEL}")).execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Tells this process's feed that a transaction holding events committed.
    pub fn appended(&self) {
        self.appended.notify_waiters();
    }

    /// Events after `seq`, oldest first; only one lecture's with `lecture`.
    pub async fn after(&self, seq: i64, lecture: Option<&str>, limit: u32) -> Result<Vec<Event>, EventError> {
        let rows = sqlx::query(
            "SELECT seq, kind, lecture_id, payload, created_at FROM events \
             WHERE seq > $1 AND ($2 IS NULL OR lecture_id = $2) ORDER BY seq LIMIT $3",
        )
        .bind(seq)
        .bind(lecture.map(str::to_string))
        .bind(limit as i64)
        .fetch_all(&self.db.pool)
        .await?;
        Ok(rows.iter().filter_map(event_from_row).collect())
    }

    /// The newest seq, 0 when the log is empty.
    pub async fn last_seq(&self) -> Result<i64, EventError> {
        let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS seq FROM events").fetch_one(&self.db.pool).await?;
        Ok(row.try_get("seq")?)
    }

    /// How many events of `kind` happened since `since_ms`. Cancellations
    /// (`lecture.failed` with `"cancelled": true`) are an operator's choice,
    /// not a failure, and are not counted.
    pub async fn count_since(&self, kind: EventKind, since_ms: i64) -> Result<u64, EventError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM events WHERE kind = $1 AND created_at >= $2 \
             AND payload NOT LIKE '%\"cancelled\":true%'",
        )
        .bind(kind.as_str())
        .bind(since_ms)
        .fetch_one(&self.db.pool)
        .await?;
        Ok(row.try_get::<i64, _>("n")? as u64)
    }

    /// Removes events older than `before_ms`, but never the newest (seq
    /// numbers must not restart) nor one a webhook delivery still needs.
    pub async fn prune(&self, before_ms: i64) -> Result<u64, EventError> {
        let done = sqlx::query(
            "DELETE FROM events WHERE created_at < $1 AND seq < (SELECT MAX(seq) FROM events) \
             AND seq NOT IN (SELECT event_seq FROM webhook_deliveries WHERE state <> 'delivered')",
        )
        .bind(before_ms)
        .execute(&self.db.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

fn event_from_row(row: &AnyRow) -> Option<Event> {
    let kind: String = row.try_get("kind").ok()?;
    let payload: String = row.try_get("payload").ok()?;
    Some(Event {
        seq: row.try_get("seq").ok()?,
        kind: EventKind::parse(&kind)?,
        lecture_id: row.try_get("lecture_id").ok()?,
        payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
        created_at: row.try_get("created_at").ok()?,
    })
}

/// This process's view of the log: one task tails it and hands each new
/// event to every subscriber (the SSE streams), so a thousand viewers cost
/// one query per poll, not a thousand.
#[derive(Debug, Clone)]
pub struct EventFeed {
    sender: broadcast::Sender<Arc<Event>>,
}

impl EventFeed {
    /// Starts tailing `log` from its current end, until `shutdown`.
    pub fn start(log: EventLog, notify_url: Option<String>, shutdown: CancellationToken) -> EventFeed {
        let (sender, _) = broadcast::channel(1024);
        let feed = EventFeed { sender: sender.clone() };
        tokio::spawn(async move {
            let postgres_wake = Arc::new(Notify::new());
            if let Some(url) = notify_url {
                tokio::spawn(listen(url, postgres_wake.clone(), shutdown.clone()));
            }
            let mut cursor = loop {
                match log.last_seq().await {
                    Ok(seq) => break seq,
                    Err(e) => tracing::warn!(error = %e, "event feed cannot read the log; retrying"),
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(POLL) => {}
                }
            };
            loop {
                match log.after(cursor, None, 500).await {
                    Ok(events) => {
                        for event in events {
                            cursor = event.seq;
                            let _ = sender.send(Arc::new(event));
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "event feed cannot read the log"),
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = log.appended.notified() => {}
                    _ = postgres_wake.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
        });
        feed
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sender.subscribe()
    }
}

/// Wakes `wake` on every PostgreSQL `NOTIFY vidpipe_events`.
async fn listen(url: String, wake: Arc<Notify>, shutdown: CancellationToken) {
    loop {
        match sqlx::postgres::PgListener::connect(&url).await {
            Ok(mut listener) => {
                if listener.listen(NOTIFY_CHANNEL).await.is_ok() {
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            received = listener.recv() => match received {
                                Ok(_) => wake.notify_waiters(),
                                Err(_) => break,
                            },
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot LISTEN for events; polling"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_are_numbered_in_order_and_read_back_per_lecture() {
        let (_dir, db) = crate::db::scratch().await;
        let log = EventLog::new(db);
        assert_eq!(log.last_seq().await.unwrap(), 0);
        log.append(EventKind::Uploaded, Some("a"), serde_json::json!({"n": 1})).await.unwrap();
        log.append(EventKind::Uploaded, Some("b"), serde_json::json!({"n": 2})).await.unwrap();
        log.append(EventKind::Completed, Some("a"), serde_json::json!({"n": 3})).await.unwrap();
        let all: Vec<i64> = log.after(0, None, 10).await.unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(all, vec![1, 2, 3]);
        let a = log.after(1, Some("a"), 10).await.unwrap();
        assert_eq!((a.len(), a[0].kind, a[0].payload["n"].as_i64()), (1, EventKind::Completed, Some(3)));
        assert_eq!(log.count_since(EventKind::Uploaded, 0).await.unwrap(), 2);
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
    }
}
