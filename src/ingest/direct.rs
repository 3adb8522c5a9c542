//! Direct uploads: one-time, expiring upload URLs that a backend holding a
//! key hands to a browser, which holds none (the Mux / Cloudflare Stream
//! pattern).
//!
//! A grant fixes everything but the bytes: the lecture's id, course, topic,
//! priority and the largest file it takes. Its URL carries a random 256-bit
//! secret, stored only as its SHA-256, like API keys. One upload takes the
//! grant (`claim`): a plain POST when it commits, a tus upload when it is
//! created. So a URL makes at most one lecture, whatever the races, and the
//! backend knows that lecture's id from the start.

use std::time::Duration;

use sqlx::any::AnyRow;
use sqlx::Row;

use super::resumable::UploadFields;
use crate::db::Database;
use crate::domain::{now_ms, LectureId};
use crate::keys;

/// A grant as stored.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The id of the lecture the upload becomes.
    pub id: LectureId,
    pub fields: UploadFields,
    pub max_bytes: u64,
    /// After this, the URL starts no upload (one started earlier goes on).
    pub expires_at: i64,
    /// When an upload took the URL.
    pub used_at: Option<i64>,
    /// The key that made it; `None` on an open API.
    pub created_by: Option<String>,
}

impl Grant {
    pub fn is_expired(&self) -> bool {
        self.expires_at <= now_ms()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DirectUploadError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("no randomness for the upload URL: {0}")]
    Entropy(String),
}

/// The `direct_uploads` table.
#[derive(Debug, Clone)]
pub struct DirectUploads {
    db: Database,
    /// How long a used grant is kept after it expires: as long as the tus
    /// upload it started may run.
    keep_used: Duration,
}

impl DirectUploads {
    pub fn new(db: Database, keep_used: Duration) -> DirectUploads {
        DirectUploads { db, keep_used }
    }

    /// Makes a grant and returns it with its secret, which is stored nowhere.
    pub async fn create(
        &self,
        fields: UploadFields,
        max_bytes: u64,
        valid_for: Duration,
        created_by: Option<String>,
    ) -> Result<(Grant, String), DirectUploadError> {
        let secret = keys::random_secret().map_err(DirectUploadError::Entropy)?;
        let id = LectureId::new();
        let now = now_ms();
        let expires_at = now + valid_for.as_millis() as i64;
        sqlx::query(
            "INSERT INTO direct_uploads (id, token_hash, created_by, course_id, name_of_topic, filename, priority, \
             max_bytes, created_at, expires_at, thumbnail_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(id.as_str())
        .bind(keys::hash(&secret))
        .bind(created_by.clone())
        .bind(&fields.course_id)
        .bind(&fields.name_of_topic)
        .bind(fields.filename.clone())
        .bind(fields.priority)
        .bind(max_bytes as i64)
        .bind(now)
        .bind(expires_at)
        .bind(fields.thumbnail_time)
        .execute(&self.db.pool)
        .await?;
        Ok((Grant { id, fields, max_bytes, expires_at, used_at: None, created_by }, secret))
    }

    /// The grant, by its id (for the backend that made it).
    pub async fn get(&self, id: &LectureId) -> Result<Option<Grant>, DirectUploadError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM direct_uploads WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(row.as_ref().map(grant_from_row).transpose()?)
    }

    /// The grant whose URL this is: its id and its secret must match.
    pub async fn open(&self, id: &LectureId, secret: &str) -> Result<Option<Grant>, DirectUploadError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM direct_uploads WHERE id = $1 AND token_hash = $2"))
            .bind(id.as_str())
            .bind(keys::hash(secret))
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(row.as_ref().map(grant_from_row).transpose()?)
    }

    /// Takes the grant for one upload: true for the first caller while it
    /// is valid, false for every other, in every process.
    pub async fn claim(&self, id: &LectureId) -> Result<bool, DirectUploadError> {
        let now = now_ms();
        let taken =
            sqlx::query("UPDATE direct_uploads SET used_at = $1 WHERE id = $2 AND used_at IS NULL AND expires_at > $1")
                .bind(now)
                .bind(id.as_str())
                .execute(&self.db.pool)
                .await?;
        Ok(taken.rows_affected() == 1)
    }

    /// Gives a claim back when the upload that took it could not start.
    pub async fn unclaim(&self, id: &LectureId) -> Result<(), DirectUploadError> {
        sqlx::query("UPDATE direct_uploads SET used_at = NULL WHERE id = $1")
            .bind(id.as_str())
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Forgets grants no upload took before they expired, and used ones
    /// once the upload they started has had its time; returns how many.
    pub async fn remove_expired(&self) -> Result<u64, DirectUploadError> {
        let now = now_ms();
        let removed = sqlx::query(
            "DELETE FROM direct_uploads WHERE (used_at IS NULL AND expires_at <= $1) OR (used_at IS NOT NULL AND \
             expires_at <= $2)",
        )
        .bind(now)
        .bind(now - self.keep_used.as_millis() as i64)
        .execute(&self.db.pool)
        .await?;
        Ok(removed.rows_affected())
    }
}

const COLUMNS: &str =
    "id, created_by, course_id, name_of_topic, filename, priority, thumbnail_time, max_bytes, expires_at, used_at";

fn grant_from_row(row: &AnyRow) -> Result<Grant, sqlx::Error> {
    let id: String = row.try_get("id")?;
    Ok(Grant {
        id: id.parse().map_err(|e: crate::domain::InvalidValue| sqlx::Error::Decode(e.0.into()))?,
        fields: UploadFields {
            course_id: row.try_get("course_id")?,
            name_of_topic: row.try_get("name_of_topic")?,
            filename: row.try_get("filename")?,
            priority: row.try_get("priority")?,
            thumbnail_time: row.try_get("thumbnail_time")?,
        },
        max_bytes: row.try_get::<i64, _>("max_bytes")?.max(0) as u64,
        expires_at: row.try_get("expires_at")?,
        used_at: row.try_get("used_at")?,
        created_by: row.try_get("created_by")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> UploadFields {
        UploadFields {
            course_id: "c".into(),
            name_of_topic: "t".into(),
            filename: None,
            priority: 0,
            thumbnail_time: None,
        }
    }

    #[tokio::test]
    async fn a_grant_opens_with_its_secret_only_and_is_claimed_once() {
        let (_dir, db) = crate::db::scratch().await;
        let grants = DirectUploads::new(db, Duration::from_secs(60));
        let (grant, secret) = grants.create(fields(), 1000, Duration::from_secs(60), Some("k".into())).await.unwrap();
        assert_eq!(secret.len(), 43);
        assert!(grants.open(&grant.id, "not-the-secret").await.unwrap().is_none());
        let opened = grants.open(&grant.id, &secret).await.unwrap().expect("opens with its secret");
        assert_eq!((opened.fields, opened.max_bytes, opened.created_by.as_deref()), (fields(), 1000, Some("k")));
        assert!(grants.claim(&grant.id).await.unwrap());
        assert!(!grants.claim(&grant.id).await.unwrap(), "a second upload cannot take it");
        grants.unclaim(&grant.id).await.unwrap();
        assert!(grants.claim(&grant.id).await.unwrap(), "given back, it can be taken again");
    }

    #[tokio::test]
    async fn expired_grants_cannot_be_claimed_and_are_removed() {
        let (_dir, db) = crate::db::scratch().await;
        let grants = DirectUploads::new(db, Duration::from_millis(1));
        let (grant, secret) = grants.create(fields(), 1000, Duration::from_millis(1), None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let opened = grants.open(&grant.id, &secret).await.unwrap().expect("still there until swept");
        assert!(opened.is_expired());
        assert!(!grants.claim(&grant.id).await.unwrap());
        assert_eq!(grants.remove_expired().await.unwrap(), 1);
        assert!(grants.get(&grant.id).await.unwrap().is_none());
    }
}
