//! Resumable uploads: the state behind the tus endpoint (`http/uploads.rs`).
//!
//! A partial upload is a row in `uploads` and a file under
//! `<uploads>/partial/`. The row's `received` counts only bytes that are on
//! disk and synced, so after a crash or a restart the upload resumes from
//! there (bytes past it, written by a request that died, are cut off first).
//! Any API process sharing the database and the data directory can continue
//! an upload: one request at a time holds it, through a lease in the row
//! (`writer`), so two clients, or two processes, never append at once.
//!
//! The lecture an upload becomes has the upload's id, so finishing is
//! idempotent: a finish interrupted by a crash is finished again, never
//! twice.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sqlx::any::AnyRow;
use sqlx::Row;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::db::Database;
use crate::domain::{now_ms, LectureId};

/// How long one request may hold an upload without writing to it; a writer
/// that died is replaced after this.
const WRITER_LEASE: Duration = Duration::from_secs(60);

/// The form fields of a plain upload, carried by tus's `Upload-Metadata`.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadFields {
    pub course_id: String,
    pub name_of_topic: String,
    pub filename: Option<String>,
    pub priority: i64,
    /// Where to take the thumbnail, in seconds.
    pub thumbnail_time: Option<f64>,
}

/// An upload as stored.
#[derive(Debug, Clone)]
pub struct PartialUpload {
    pub id: LectureId,
    /// Who may continue it: the key's name, or `anyone` on an open API.
    pub owner: String,
    pub length: u64,
    pub received: u64,
    /// `Upload-Metadata` as the client sent it, to send back on `HEAD`.
    pub metadata: String,
    pub fields: UploadFields,
    pub expires_at: i64,
    /// Set once the whole file became this lecture.
    pub lecture_id: Option<String>,
}

impl PartialUpload {
    pub fn is_complete(&self) -> bool {
        self.received == self.length
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResumableError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("could not store the upload: {0}")]
    Io(#[from] std::io::Error),
    /// The client's offset is not where the upload is.
    #[error("the upload is at byte {at}, not {sent}: ask with HEAD and resume from there")]
    WrongOffset { at: u64, sent: u64 },
    #[error("another request is writing this upload; try again when it is done")]
    Busy,
    #[error("this chunk goes past the upload's length of {0} bytes")]
    TooLong(u64),
    #[error("the upload paused for more than {0:?}; resume it with HEAD and PATCH")]
    Stalled(Duration),
}

/// The `uploads` table and the partial files.
#[derive(Debug, Clone)]
pub struct PartialUploads {
    db: Database,
    dir: PathBuf,
    expiry: Duration,
    idle_timeout: Duration,
}

/// A request's hold on an upload; dropped holds expire with their lease.
#[derive(Debug)]
pub struct WriterLease {
    id: LectureId,
    token: String,
}

impl PartialUploads {
    /// Partial files go in `<uploads_dir>/partial`; an upload not finished
    /// within `expiry` of its creation is removed.
    pub fn new(db: Database, uploads_dir: &Path, expiry: Duration, idle_timeout: Duration) -> PartialUploads {
        PartialUploads { db, dir: uploads_dir.join("partial"), expiry, idle_timeout }
    }

    pub fn expiry(&self) -> Duration {
        self.expiry
    }

    fn file(&self, id: &LectureId) -> PathBuf {
        self.dir.join(id.as_str())
    }

    /// The file of an upload, complete or not.
    pub fn path(&self, upload: &PartialUpload) -> PathBuf {
        self.file(&upload.id)
    }

    /// Stores a new, empty upload of `length` bytes; `id` is also the id
    /// of the lecture it becomes.
    pub async fn create(
        &self,
        id: &LectureId,
        owner: &str,
        length: u64,
        metadata: &str,
        fields: UploadFields,
    ) -> Result<PartialUpload, ResumableError> {
        tokio::fs::create_dir_all(&self.dir).await?;
        let id = id.clone();
        tokio::fs::File::create_new(self.file(&id)).await?.sync_all().await?;
        let now = now_ms();
        let expires_at = now + self.expiry.as_millis() as i64;
        let inserted = sqlx::query(
            "INSERT INTO uploads (id, owner, length, metadata, course_id, name_of_topic, filename, priority, \
             created_at, expires_at, thumbnail_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(id.as_str())
        .bind(owner)
        .bind(length as i64)
        .bind(metadata)
        .bind(&fields.course_id)
        .bind(&fields.name_of_topic)
        .bind(fields.filename.clone())
        .bind(fields.priority)
        .bind(now)
        .bind(expires_at)
        .bind(fields.thumbnail_time)
        .execute(&self.db.pool)
        .await;
        if let Err(e) = inserted {
            let _ = tokio::fs::remove_file(self.file(&id)).await;
            return Err(e.into());
        }
        Ok(PartialUpload {
            id,
            owner: owner.to_string(),
            length,
            received: 0,
            metadata: metadata.to_string(),
            fields,
            expires_at,
            lecture_id: None,
        })
    }

    /// The upload, if it exists and has not expired.
    pub async fn get(&self, id: &LectureId) -> Result<Option<PartialUpload>, ResumableError> {
        let row = sqlx::query(
            "SELECT id, owner, length, received, metadata, course_id, name_of_topic, filename, priority, \
             thumbnail_time, expires_at, lecture_id FROM uploads WHERE id = $1 AND expires_at > $2",
        )
        .bind(id.as_str())
        .bind(now_ms())
        .fetch_optional(&self.db.pool)
        .await?;
        Ok(row.as_ref().map(upload_from_row).transpose()?)
    }

    /// Takes the upload for one request: only one at a time, in every
    /// process, appends or finishes it.
    pub async fn hold(&self, id: &LectureId) -> Result<WriterLease, ResumableError> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let now = now_ms();
        let taken = sqlx::query(
            "UPDATE uploads SET writer = $1, writer_until = $2 \
             WHERE id = $3 AND (writer IS NULL OR writer_until < $4)",
        )
        .bind(&token)
        .bind(now + WRITER_LEASE.as_millis() as i64)
        .bind(id.as_str())
        .bind(now)
        .execute(&self.db.pool)
        .await?;
        if taken.rows_affected() == 0 {
            return Err(ResumableError::Busy);
        }
        Ok(WriterLease { id: id.clone(), token })
    }

    pub async fn release(&self, lease: WriterLease) -> Result<(), ResumableError> {
        sqlx::query("UPDATE uploads SET writer = NULL, writer_until = NULL WHERE id = $1 AND writer = $2")
            .bind(lease.id.as_str())
            .bind(&lease.token)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Appends `body` at `offset` (which must be where the upload is) and
    /// returns the new offset. Bytes that arrived before the body broke off
    /// are kept, as tus asks: the client resumes after them.
    pub async fn append<S, E>(&self, lease: &WriterLease, offset: u64, body: S) -> Result<u64, ResumableError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        let upload = self.get(&lease.id).await?.ok_or(ResumableError::WrongOffset { at: 0, sent: offset })?;
        if upload.received != offset {
            return Err(ResumableError::WrongOffset { at: upload.received, sent: offset });
        }
        let mut file = tokio::fs::OpenOptions::new().write(true).open(self.file(&lease.id)).await?;
        // Bytes past `received` are from a request that died before it
        // recorded them: not durable, so not kept.
        file.set_len(offset).await?;
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let mut written = offset;
        let mut body = body;
        let mut renewed = std::time::Instant::now();
        let outcome = loop {
            let chunk = match tokio::time::timeout(self.idle_timeout, body.next()).await {
                Err(_) => break Err(ResumableError::Stalled(self.idle_timeout)),
                Ok(None) => break Ok(()),
                // A broken-off body: keep what arrived.
                Ok(Some(Err(_))) => break Ok(()),
                Ok(Some(Ok(chunk))) => chunk,
            };
            if written + chunk.len() as u64 > upload.length {
                break Err(ResumableError::TooLong(upload.length));
            }
            out.write_all(&chunk).await?;
            written += chunk.len() as u64;
            crate::metrics::uploaded_bytes(chunk.len() as u64);
            if renewed.elapsed() > WRITER_LEASE / 4 {
                self.renew(lease).await?;
                renewed = std::time::Instant::now();
            }
        };
        out.flush().await?;
        let file = out.into_inner();
        file.sync_all().await?;
        if written != offset {
            sqlx::query("UPDATE uploads SET received = $1 WHERE id = $2 AND writer = $3")
                .bind(written as i64)
                .bind(lease.id.as_str())
                .bind(&lease.token)
                .execute(&self.db.pool)
                .await?;
        }
        outcome.map(|()| written)
    }

    async fn renew(&self, lease: &WriterLease) -> Result<(), ResumableError> {
        sqlx::query("UPDATE uploads SET writer_until = $1 WHERE id = $2 AND writer = $3")
            .bind(now_ms() + WRITER_LEASE.as_millis() as i64)
            .bind(lease.id.as_str())
            .bind(&lease.token)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Records that the upload became its lecture.
    pub async fn finished(&self, id: &LectureId) -> Result<(), ResumableError> {
        sqlx::query("UPDATE uploads SET lecture_id = $1 WHERE id = $1")
            .bind(id.as_str())
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Forgets the upload and removes its partial file (a finished upload's
    /// file has become the lecture's source and is not touched).
    pub async fn remove(&self, id: &LectureId) -> Result<(), ResumableError> {
        sqlx::query("DELETE FROM uploads WHERE id = $1").bind(id.as_str()).execute(&self.db.pool).await?;
        match tokio::fs::remove_file(self.file(id)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Removes uploads past their expiry, finished or not; returns how many.
    pub async fn remove_expired(&self) -> Result<u64, ResumableError> {
        let rows =
            sqlx::query("SELECT id FROM uploads WHERE expires_at <= $1 AND (writer IS NULL OR writer_until < $1)")
                .bind(now_ms())
                .fetch_all(&self.db.pool)
                .await?;
        let mut removed = 0;
        for row in rows {
            let id: String = row.try_get("id")?;
            if let Ok(id) = id.parse::<LectureId>() {
                self.remove(&id).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn upload_from_row(row: &AnyRow) -> Result<PartialUpload, sqlx::Error> {
    let id: String = row.try_get("id")?;
    Ok(PartialUpload {
        id: id.parse().map_err(|e: crate::domain::InvalidValue| sqlx::Error::Decode(e.0.into()))?,
        owner: row.try_get("owner")?,
        length: row.try_get::<i64, _>("length")?.max(0) as u64,
        received: row.try_get::<i64, _>("received")?.max(0) as u64,
        metadata: row.try_get("metadata")?,
        fields: UploadFields {
            course_id: row.try_get("course_id")?,
            name_of_topic: row.try_get("name_of_topic")?,
            filename: row.try_get("filename")?,
            priority: row.try_get("priority")?,
            thumbnail_time: row.try_get("thumbnail_time")?,
        },
        expires_at: row.try_get("expires_at")?,
        lecture_id: row.try_get("lecture_id")?,
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

    fn body(chunks: Vec<&'static [u8]>) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c))))
    }

    #[tokio::test]
    async fn appends_resume_at_the_durable_offset_one_writer_at_a_time() {
        let (dir, db) = crate::db::scratch().await;
        let uploads = PartialUploads::new(db, dir.path(), Duration::from_secs(60), Duration::from_secs(5));
        let upload = uploads.create(&LectureId::new(), "k", 10, "m", fields()).await.unwrap();
        let lease = uploads.hold(&upload.id).await.unwrap();
        assert!(matches!(uploads.hold(&upload.id).await, Err(ResumableError::Busy)), "one writer at a time");
        assert_eq!(uploads.append(&lease, 0, body(vec![b"0123"])).await.unwrap(), 4);
        assert!(matches!(
            uploads.append(&lease, 0, body(vec![b"x"])).await,
            Err(ResumableError::WrongOffset { at: 4, sent: 0 })
        ));
        // A request that died wrote bytes it never recorded: they are cut.
        std::fs::OpenOptions::new()
            .append(true)
            .open(uploads.path(&upload))
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"junk-junk-junk"))
            .unwrap();
        assert!(matches!(
            uploads.append(&lease, 4, body(vec![b"45678", b"9X"])).await,
            Err(ResumableError::TooLong(10))
        ));
        let now = uploads.get(&upload.id).await.unwrap().unwrap();
        assert_eq!(now.received, 9, "what arrived before the excess is kept");
        assert_eq!(uploads.append(&lease, 9, body(vec![b"9"])).await.unwrap(), 10);
        uploads.release(lease).await.unwrap();
        assert_eq!(std::fs::read(uploads.path(&upload)).unwrap(), b"0123456789");
        assert!(uploads.get(&upload.id).await.unwrap().unwrap().is_complete());
        uploads.hold(&upload.id).await.expect("free again after release");
    }

    #[tokio::test]
    async fn expired_uploads_are_gone_with_their_files() {
        let (dir, db) = crate::db::scratch().await;
        let uploads = PartialUploads::new(db, dir.path(), Duration::from_millis(1), Duration::from_secs(5));
        let upload = uploads.create(&LectureId::new(), "k", 10, "m", fields()).await.unwrap();
        assert!(uploads.path(&upload).exists());
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(uploads.get(&upload.id).await.unwrap().is_none(), "expired uploads are not offered");
        assert_eq!(uploads.remove_expired().await.unwrap(), 1);
        assert!(!uploads.path(&upload).exists());
    }
}
