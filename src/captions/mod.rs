//! Captions: checked when they arrive, stored per lecture and language,
//! published as HLS subtitles renditions beside the video.
//!
//! They come three ways: a `captions` file in the upload form, `POST
//! /api/lectures/{id}/captions` at any time, and the text subtitle streams
//! inside the uploaded file (extracted by the worker). All three end up as
//! one row per (lecture, language) holding normalised WebVTT: caption files
//! are small ([`MAX_CAPTION_BYTES`]), so the database is the one place they
//! live until published, and a replaced language is one row rewritten.
//! `revision` counts rewrites, so publishing can tell whether the text it
//! published is still the text stored (`publish::captions`).

pub mod cues;
pub mod language;

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::db::Database;
use crate::domain::now_ms;
use crate::events::{EventError, EventKind, EventLog};
pub use cues::{Cue, CueError, MAX_CAPTION_BYTES};
pub use language::{Language, UnknownLanguage};

/// Caption languages one lecture may have.
pub const MAX_TRACKS: usize = 16;

/// Where a caption track came from. An uploaded file wins over a stream
/// found in the video: the worker never replaces one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Upload,
    Embedded,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Upload => "upload",
            Origin::Embedded => "embedded",
        }
    }
}

/// A checked caption track: a known language and at least one cue.
#[derive(Debug, Clone, PartialEq)]
pub struct Captions {
    pub language: Language,
    pub origin: Origin,
    pub cues: Vec<Cue>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptionError {
    #[error(transparent)]
    Language(#[from] UnknownLanguage),
    #[error(transparent)]
    Cues(#[from] CueError),
}

impl Captions {
    /// A caption file (WebVTT or SRT) sent for `language`.
    pub fn from_file(language: &str, bytes: &[u8]) -> Result<Captions, CaptionError> {
        let language = language.trim().parse::<Language>()?;
        Ok(Captions { language, origin: Origin::Upload, cues: cues::parse(bytes)? })
    }
}

/// A caption track as the lecture document lists it (the link is added
/// from the lecture's published prefix).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptionSummary {
    pub language: String,
    pub label: String,
}

/// A stored caption track.
#[derive(Debug, Clone)]
pub struct StoredCaptions {
    pub language: String,
    pub label: String,
    pub vtt: String,
    /// Bumped on every rewrite of the text.
    pub revision: i64,
    /// The attempt prefix this revision is published under, if any.
    pub published_prefix: Option<String>,
}

impl StoredCaptions {
    pub fn summary(&self) -> CaptionSummary {
        CaptionSummary { language: self.language.clone(), label: self.label.clone() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaptionStoreError {
    #[error("a lecture has at most {MAX_TRACKS} caption languages; replace one instead")]
    TooMany,
    #[error("the lecture no longer exists")]
    LectureGone,
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// The `captions` table.
#[derive(Debug, Clone)]
pub struct CaptionStore {
    db: Database,
    events: EventLog,
}

impl CaptionStore {
    pub fn new(db: Database, events: EventLog) -> CaptionStore {
        CaptionStore { db, events }
    }

    /// Every track of a lecture, by language.
    pub async fn list(&self, lecture: &str) -> Result<Vec<StoredCaptions>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT language, label, vtt, revision, published_prefix FROM captions WHERE lecture_id = $1 \
             ORDER BY language",
        )
        .bind(lecture)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(stored_from_row).collect()
    }

    /// Adds or replaces the track of `captions.language`. `true`: it is new.
    /// A replaced track is unpublished until it is published again.
    pub async fn put(&self, lecture: &str, captions: &Captions) -> Result<bool, CaptionStoreError> {
        let mut tx = self.db.pool.begin().await?;
        let others: i64 = sqlx::query("SELECT COUNT(*) AS n FROM captions WHERE lecture_id = $1 AND language <> $2")
            .bind(lecture)
            .bind(captions.language.tag())
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if others as usize >= MAX_TRACKS {
            return Err(CaptionStoreError::TooMany);
        }
        let existed = sqlx::query("SELECT 1 AS one FROM captions WHERE lecture_id = $1 AND language = $2")
            .bind(lecture)
            .bind(captions.language.tag())
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        match upsert_on(&mut tx, lecture, captions, true).await {
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                return Err(CaptionStoreError::LectureGone)
            }
            other => other?,
        };
        tx.commit().await?;
        Ok(!existed)
    }

    /// Adds a track found in the video unless the language already has one
    /// (an uploaded file, or the same stream from an earlier attempt).
    pub async fn add_if_absent(&self, lecture: &str, captions: &Captions) -> Result<bool, sqlx::Error> {
        let mut tx = self.db.pool.begin().await?;
        let added = upsert_on(&mut tx, lecture, captions, false).await?;
        tx.commit().await?;
        Ok(added)
    }

    /// Records that `revision` of a track is published under `prefix`; a
    /// track rewritten since stays unpublished.
    pub async fn mark_published(
        &self,
        lecture: &str,
        language: &str,
        revision: i64,
        prefix: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE captions SET published_prefix = $1 WHERE lecture_id = $2 AND language = $3 AND revision = $4",
        )
        .bind(prefix)
        .bind(lecture)
        .bind(language)
        .bind(revision)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Sets the list the lecture document shows, if `prefix` is still the
    /// lecture's published video, and announces a change
    /// (`lecture.captions`) in the same transaction.
    pub async fn set_listed(&self, lecture: &str, prefix: &str, listed: &[CaptionSummary]) -> Result<(), EventError> {
        let text = serde_json::to_string(listed).expect("summaries serialize");
        let mut tx = self.db.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE lectures SET captions = $1, updated_at = $2 WHERE id = $3 AND published_prefix = $4 AND captions <> $1",
        )
        .bind(&text)
        .bind(now_ms())
        .bind(lecture)
        .bind(prefix)
        .execute(&mut *tx)
        .await?;
        if changed.rows_affected() > 0 {
            let event = serde_json::json!({ "lectureId": lecture, "captions": listed });
            self.events.append_on(&mut tx, EventKind::Captions, Some(lecture), event).await?;
        }
        tx.commit().await?;
        self.events.appended();
        Ok(())
    }
}

/// Inserts a track in `tx` (the upload's transaction, or a put's);
/// `replace` decides what happens when the language already has one.
/// Returns whether a row was written.
pub async fn upsert_on(
    tx: &mut Transaction<'_, Any>,
    lecture: &str,
    captions: &Captions,
    replace: bool,
) -> Result<bool, sqlx::Error> {
    let conflict = if replace {
        "DO UPDATE SET label = excluded.label, origin = excluded.origin, vtt = excluded.vtt, \
         revision = captions.revision + 1, published_prefix = NULL, updated_at = excluded.updated_at"
    } else {
        "DO NOTHING"
    };
    let done = sqlx::query(&format!(
        "INSERT INTO captions (lecture_id, language, label, origin, vtt, revision, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 1, $6) ON CONFLICT (lecture_id, language) {conflict}"
    ))
    .bind(lecture)
    .bind(captions.language.tag())
    .bind(captions.language.label())
    .bind(captions.origin.as_str())
    .bind(cues::to_webvtt(&captions.cues))
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() > 0)
}

fn stored_from_row(row: &AnyRow) -> Result<StoredCaptions, sqlx::Error> {
    Ok(StoredCaptions {
        language: row.try_get("language")?,
        label: row.try_get("label")?,
        vtt: row.try_get("vtt")?,
        revision: row.try_get("revision")?,
        published_prefix: row.try_get("published_prefix")?,
    })
}
