//! Webhooks: every milestone event, POSTed to each configured URL, signed
//! the Standard Webhooks way, at least once.
//!
//! Delivery works from the durable event log, never from memory:
//! 1. the dispatcher reads events after its cursor (the `cursors` table) and
//!    writes one `webhook_deliveries` row per event and URL, idempotently;
//! 2. deliverers (any process, one request at a time each) claim the oldest
//!    due delivery under a lease, POST it, and record the outcome.
//!
//! So a restart, a `kill -9` or a receiver that is down loses nothing. A
//! delivery is retried with exponential backoff for `give_up_after` (a day),
//! then marked dead for operators (`vidpipe webhooks list|retry`). Every
//! retry carries the same `webhook-id`, so receivers can drop duplicates.
//! A lecture's events go out in order: a delivery waits while an earlier one
//! of the same lecture to the same URL is still pending. Deliveries run on a
//! task of their own (one request at a time per process), each with a
//! timeout: a slow receiver delays other deliveries, never a transcode.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use super::{EventError, EventLog};
use crate::domain::{now_ms, rfc3339};

/// A delivery is given up (dead) this long after its event.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// A receiver has this long to answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A claimed delivery is someone else's to retry after this long.
const LEASE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(250);
const CURSOR: &str = "webhooks";

/// The signing key of `VIDPIPE_WEBHOOK_SECRET`: `whsec_<base64>`, as
/// Standard Webhooks libraries write it.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl std::str::FromStr for SigningKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let encoded = s.trim().strip_prefix("whsec_").unwrap_or(s.trim());
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| "write the secret as whsec_<base64>, e.g. from `openssl rand -base64 32`".to_string())?;
        if key.len() < 16 {
            return Err("the secret must hold at least 16 bytes (24 base64 characters)".into());
        }
        Ok(SigningKey(key))
    }
}

impl SigningKey {
    /// `v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
        format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// Webhook settings, validated.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub urls: Vec<String>,
    pub key: Option<SigningKey>,
    /// First retry delay, doubled each attempt up to an hour.
    pub backoff: Duration,
}

/// A delivery as operators see it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub id: String,
    pub url: String,
    pub kind: String,
    pub lecture_id: Option<String>,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: String,
    pub next_attempt_at: String,
}

/// A delivery claimed for an attempt.
struct Due {
    seq: i64,
    url: String,
    /// Attempts before this one.
    attempts: i64,
    /// When the delivery was created, or put back in line by an operator.
    since: i64,
}

/// The `webhook-id` of an event: the same on every retry.
pub fn message_id(seq: i64) -> String {
    format!("evt_{seq}")
}

pub struct Webhooks {
    pub log: EventLog,
    pub config: WebhookConfig,
    /// Identifies this process's leases.
    pub holder: String,
}

impl Webhooks {
    /// Dispatches and delivers until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        if self.config.urls.is_empty() {
            return;
        }
        let client = match reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build() {
            Ok(c) => c,
            Err(e) => return tracing::error!(error = %e, "cannot build the webhook client; no webhooks will be sent"),
        };
        loop {
            if let Err(e) = self.dispatch().await {
                tracing::warn!(error = %e, "webhook dispatch failed; retrying");
            }
            let mut delivered_any = false;
            loop {
                match self.claim().await {
                    Ok(Some(due)) => {
                        delivered_any = true;
                        self.deliver(&client, due).await;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot claim webhook deliveries");
                        break;
                    }
                }
                if shutdown.is_cancelled() {
                    return;
                }
            }
            if !delivered_any {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
        }
    }

    /// Turns new events into deliveries, one per URL.
    async fn dispatch(&self) -> Result<(), EventError> {
        let db = self.log.database();
        let cursor: Option<i64> = sqlx::query("SELECT value FROM cursors WHERE name = $1")
            .bind(CURSOR)
            .fetch_optional(&db.pool)
            .await?
            .map(|r| r.try_get("value"))
            .transpose()?;
        let Some(cursor) = cursor else {
            // First start with webhooks: from now on, not the whole history.
            let now = self.log.last_seq().await?;
            sqlx::query("INSERT INTO cursors (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                .bind(CURSOR)
                .bind(now)
                .execute(&db.pool)
                .await?;
            return Ok(());
        };
        let events = self.log.after(cursor, None, 500).await?;
        let Some(last) = events.last().map(|e| e.seq) else { return Ok(()) };
        let mut tx = db.pool.begin().await?;
        for event in events.iter().filter(|e| e.kind.goes_to_webhooks()) {
            for url in &self.config.urls {
                sqlx::query(
                    "INSERT INTO webhook_deliveries (event_seq, url, lecture_id, state, next_attempt_at, created_at) \
                     VALUES ($1, $2, $3, 'pending', $4, $4) ON CONFLICT (event_seq, url) DO NOTHING",
                )
                .bind(event.seq)
                .bind(url)
                .bind(event.lecture_id.clone())
                .bind(event.created_at)
                .execute(&mut *tx)
                .await?;
            }
        }
        sqlx::query("UPDATE cursors SET value = $1 WHERE name = $2 AND value < $1")
            .bind(last)
            .bind(CURSOR)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Leases the oldest due delivery whose lecture has no earlier one
    /// pending for the same URL.
    async fn claim(&self) -> Result<Option<Due>, EventError> {
        let now = now_ms();
        let row = sqlx::query(
            "UPDATE webhook_deliveries SET lease_until = $1 \
             WHERE (event_seq, url) = ( \
                 SELECT d.event_seq, d.url FROM webhook_deliveries d \
                 WHERE d.state = 'pending' AND d.next_attempt_at <= $2 \
                   AND (d.lease_until IS NULL OR d.lease_until < $2) \
                   AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e WHERE e.url = d.url \
                       AND e.lecture_id = d.lecture_id AND e.state = 'pending' AND e.event_seq < d.event_seq) \
                 ORDER BY d.event_seq LIMIT 1) \
               AND (lease_until IS NULL OR lease_until < $2) \
             RETURNING event_seq, url, attempts, created_at",
        )
        .bind(now + LEASE.as_millis() as i64)
        .bind(now)
        .fetch_optional(&self.log.database().pool)
        .await?;
        row.map(|r| {
            Ok(Due {
                seq: r.try_get("event_seq")?,
                url: r.try_get("url")?,
                attempts: r.try_get("attempts")?,
                since: r.try_get("created_at")?,
            })
        })
        .transpose()
    }

    async fn deliver(&self, client: &reqwest::Client, Due { seq, url, attempts, since }: Due) {
        let event = match self.log.after(seq - 1, None, 1).await {
            Ok(events) => events.into_iter().next().filter(|e| e.seq == seq),
            Err(e) => return tracing::warn!(error = %e, "cannot read the event of a webhook"),
        };
        let outcome = match &event {
            None => Err("the event is no longer in the log".to_string()),
            Some(event) => {
                let id = message_id(seq);
                let body = json!({
                    "type": event.kind.as_str(),
                    "timestamp": rfc3339(event.created_at),
                    "data": event.payload,
                })
                .to_string();
                let timestamp = now_ms() / 1000;
                let mut request = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("webhook-id", &id)
                    .header("webhook-timestamp", timestamp.to_string());
                if let Some(key) = &self.config.key {
                    request = request.header("webhook-signature", key.sign(&id, timestamp, &body));
                }
                match request.body(body).send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("the receiver answered {}", r.status())),
                    Err(e) => Err(format!("could not reach the receiver: {e}")),
                }
            }
        };
        let pool = &self.log.database().pool;
        let now = now_ms();
        let recorded = match outcome {
            Ok(()) => {
                crate::metrics::webhook_delivered(true);
                sqlx::query(
                    "UPDATE webhook_deliveries SET state = 'delivered', attempts = attempts + 1, finished_at = $1, \
                     lease_until = NULL, last_error = NULL WHERE event_seq = $2 AND url = $3",
                )
                .bind(now)
                .bind(seq)
                .bind(&url)
                .execute(pool)
                .await
            }
            Err(error) => {
                crate::metrics::webhook_delivered(false);
                let delay = self.config.backoff.saturating_mul(1 << attempts.clamp(0, 16) as u32).min(MAX_BACKOFF);
                // A day from the event, or from an operator's retry.
                let dead = event.is_none() || now + delay.as_millis() as i64 > since + GIVE_UP_AFTER.as_millis() as i64;
                tracing::warn!(url = %url, event = seq, attempts = attempts + 1, dead, error = %error, "webhook not delivered");
                sqlx::query(
                    "UPDATE webhook_deliveries SET state = $1, attempts = attempts + 1, next_attempt_at = $2, \
                     lease_until = NULL, last_error = $3, finished_at = $4 WHERE event_seq = $5 AND url = $6",
                )
                .bind(if dead { "dead" } else { "pending" })
                .bind(now + delay.as_millis() as i64)
                .bind(&error)
                .bind(dead.then_some(now))
                .bind(seq)
                .bind(&url)
                .execute(pool)
                .await
            }
        };
        if let Err(e) = recorded {
            tracing::warn!(error = %e, "cannot record a webhook outcome; it will be retried when its lease ends");
        }
    }
}

/// Deliveries in `state` (or all), newest first.
pub async fn list(log: &EventLog, state: Option<&str>, limit: u32) -> Result<Vec<Delivery>, EventError> {
    let rows = sqlx::query(
        "SELECT d.event_seq, d.url, d.lecture_id, d.state, d.attempts, d.last_error, d.created_at, d.next_attempt_at, \
                e.kind FROM webhook_deliveries d LEFT JOIN events e ON e.seq = d.event_seq \
         WHERE ($1 IS NULL OR d.state = $1) ORDER BY d.event_seq DESC LIMIT $2",
    )
    .bind(state.map(str::to_string))
    .bind(limit as i64)
    .fetch_all(&log.database().pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Delivery {
                id: message_id(r.try_get("event_seq")?),
                url: r.try_get("url")?,
                kind: r.try_get::<Option<String>, _>("kind")?.unwrap_or_else(|| "(pruned)".into()),
                lecture_id: r.try_get("lecture_id")?,
                state: r.try_get("state")?,
                attempts: r.try_get("attempts")?,
                last_error: r.try_get("last_error")?,
                created_at: rfc3339(r.try_get("created_at")?),
                next_attempt_at: rfc3339(r.try_get("next_attempt_at")?),
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// Puts dead deliveries back in line: one (`evt_<seq>`), or every dead one.
/// Returns how many.
pub async fn retry(log: &EventLog, id: Option<&str>) -> Result<u64, EventError> {
    let seq: Option<i64> = id.map(|id| id.strip_prefix("evt_").and_then(|s| s.parse().ok()).unwrap_or(-1));
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_attempt_at = $1, finished_at = NULL, \
             created_at = $1 WHERE state = 'dead' AND ($2 IS NULL OR event_seq = $2)",
    )
    .bind(now_ms())
    .bind(seq)
    .execute(&log.database().pool)
    .await?;
    Ok(done.rows_affected())
}

/// Removes delivered and dead deliveries finished before `before_ms`.
pub async fn prune(log: &EventLog, before_ms: i64) -> Result<u64, EventError> {
    let done = sqlx::query("DELETE FROM webhook_deliveries WHERE state <> 'pending' AND finished_at < $1")
        .bind(before_ms)
        .execute(&log.database().pool)
        .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The Standard Webhooks specification's example.
        let key: SigningKey = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!("whsec_short".parse::<SigningKey>().is_err());
        assert!("not base64!".parse::<SigningKey>().is_err());
    }
}
