//! Alert rules: conditions an operator must hear about, checked on a timer
//! in every process, fired and resolved once each.
//!
//! Each rule measures one thing from the shared stores (the event log, the
//! queue, worker heartbeats), so any process sees the same truth. Whether an
//! alert is firing lives in the `alerts` table; a transition is a guarded
//! UPDATE (`... WHERE firing = 0`), so when many processes evaluate the same
//! rule exactly one of them announces the change: a log line and an
//! `alert.firing` / `alert.resolved` event, which webhooks carry.
//!
//! Hysteresis: a rule resolves only once its measure is back under 80% of
//! its threshold, so a value hovering at the threshold does not flap.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use crate::config::AlertRules;
use crate::db::Database;
use crate::domain::{now_ms, rfc3339, JobState};
use crate::events::{EventKind, EventLog};
use crate::queue::Queue;
use crate::worker::presence::{Presence, LIVE_FOR};

/// The failure rate is judged only over at least this many ended jobs.
pub const MIN_JOBS_FOR_FAILURE_RATE: u64 = 5;
/// A firing rule resolves under this share of its threshold.
const RESOLVE_BELOW: f64 = 0.8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alert {
    FailureRate,
    Backlog,
    OldestWaiting,
    NoWorker,
}

impl Alert {
    pub const ALL: [Alert; 4] = [Alert::FailureRate, Alert::Backlog, Alert::OldestWaiting, Alert::NoWorker];

    pub fn name(self) -> &'static str {
        match self {
            Alert::FailureRate => "failure_rate",
            Alert::Backlog => "backlog",
            Alert::OldestWaiting => "oldest_waiting",
            Alert::NoWorker => "no_worker",
        }
    }
}

/// An alert as stored: firing or not, since when, and why.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertState {
    pub alert: String,
    pub firing: bool,
    pub since: Option<String>,
    pub detail: Option<String>,
}

/// One rule's reading: the measure, the threshold, and the words for it.
struct Reading {
    value: f64,
    threshold: f64,
    detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("alerts: {0}")]
    Database(#[from] sqlx::Error),
    #[error("alerts: {0}")]
    Source(String),
}

pub struct Alerts {
    pub db: Database,
    pub events: EventLog,
    pub queue: Arc<dyn Queue>,
    pub presence: Presence,
    pub rules: AlertRules,
    /// When this process started: with no worker ever seen, the no-worker
    /// clock starts here.
    pub started_at: i64,
}

impl Alerts {
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.evaluate().await {
                tracing::warn!(error = %e, "could not evaluate the alert rules");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.rules.interval) => {}
            }
        }
    }

    /// Reads every rule and records (and announces) what changed.
    pub async fn evaluate(&self) -> Result<(), AlertError> {
        for alert in Alert::ALL {
            let reading = self.read(alert).await?;
            if reading.value > reading.threshold {
                self.transition(alert, true, &reading.detail).await?;
            } else if reading.value <= reading.threshold * RESOLVE_BELOW {
                self.transition(alert, false, &reading.detail).await?;
            }
        }
        Ok(())
    }

    async fn read(&self, alert: Alert) -> Result<Reading, AlertError> {
        let now = now_ms();
        let rules = &self.rules;
        let source = |e: &dyn std::fmt::Display| AlertError::Source(e.to_string());
        Ok(match alert {
            Alert::FailureRate => {
                let since = now - rules.window.as_millis() as i64;
                let failed = self.events.count_since(EventKind::Failed, since).await.map_err(|e| source(&e))?;
                let completed = self.events.count_since(EventKind::Completed, since).await.map_err(|e| source(&e))?;
                let ended = failed + completed;
                let rate = if ended >= MIN_JOBS_FOR_FAILURE_RATE { failed as f64 / ended as f64 } else { 0.0 };
                Reading {
                    value: rate,
                    threshold: rules.failure_rate,
                    detail: format!(
                        "{failed} of {ended} jobs failed in the last {} (threshold {:.0}%)",
                        humantime::format_duration(rules.window),
                        rules.failure_rate * 100.0
                    ),
                }
            }
            Alert::Backlog => {
                let waiting = self.queue.counts().await.map_err(|e| source(&e))?.waiting;
                Reading {
                    value: waiting as f64,
                    threshold: rules.backlog as f64,
                    detail: format!("{waiting} jobs waiting (threshold {})", rules.backlog),
                }
            }
            Alert::OldestWaiting => {
                let waiting = self.queue.list(JobState::Waiting, 1000, 0).await.map_err(|e| source(&e))?;
                let oldest = waiting.iter().map(|j| j.run_at).min();
                let age = oldest.map_or(0, |t| (now - t).max(0));
                Reading {
                    value: age as f64,
                    threshold: rules.oldest_waiting.as_millis() as f64,
                    detail: format!(
                        "the oldest waiting job has waited {} (threshold {})",
                        humantime::format_duration(Duration::from_secs(age as u64 / 1000)),
                        humantime::format_duration(rules.oldest_waiting)
                    ),
                }
            }
            Alert::NoWorker => {
                let last = self.presence.last_seen().await?.unwrap_or(self.started_at);
                // Silent for less than a heartbeat's allowance counts as live.
                let silent = (now - last - LIVE_FOR.as_millis() as i64).max(0);
                Reading {
                    value: silent as f64,
                    threshold: rules.no_worker.as_millis() as f64,
                    detail: format!(
                        "no worker heartbeat since {} (threshold {})",
                        rfc3339(last),
                        humantime::format_duration(rules.no_worker)
                    ),
                }
            }
        })
    }

    async fn transition(&self, alert: Alert, firing: bool, detail: &str) -> Result<(), AlertError> {
        let pool = &self.db.pool;
        sqlx::query("INSERT INTO alerts (name, firing) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING")
            .bind(alert.name())
            .execute(pool)
            .await?;
        let changed =
            sqlx::query("UPDATE alerts SET firing = $1, since = $2, detail = $3 WHERE name = $4 AND firing = $5")
                .bind(firing as i64)
                .bind(now_ms())
                .bind(detail)
                .bind(alert.name())
                .bind(!firing as i64)
                .execute(pool)
                .await?;
        if changed.rows_affected() == 1 {
            let kind = if firing { EventKind::AlertFiring } else { EventKind::AlertResolved };
            if firing {
                tracing::warn!(alert = alert.name(), detail, "alert firing");
            } else {
                tracing::info!(alert = alert.name(), detail, "alert resolved");
            }
            let payload = json!({ "alert": alert.name(), "firing": firing, "detail": detail });
            if let Err(e) = self.events.append(kind, None, payload).await {
                tracing::warn!(alert = alert.name(), error = %e, "could not record the alert event");
            }
        }
        Ok(())
    }
}

/// Every alert's stored state.
pub async fn states(db: &Database) -> Result<Vec<AlertState>, sqlx::Error> {
    let rows = sqlx::query("SELECT name, firing, since, detail FROM alerts ORDER BY name").fetch_all(&db.pool).await?;
    rows.iter()
        .map(|r| {
            Ok(AlertState {
                alert: r.try_get("name")?,
                firing: r.try_get::<i64, _>("firing")? != 0,
                since: r.try_get::<Option<i64>, _>("since")?.map(rfc3339),
                detail: r.try_get("detail")?,
            })
        })
        .collect()
}
