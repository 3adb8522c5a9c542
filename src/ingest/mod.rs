//! Receiving an upload: stream the multipart body to disk, check the form
//! fields, probe the file. Nothing is created until the file is known to be
//! a video we can transcode.
//!
//! The body is never held in memory: each chunk is written as it arrives, so
//! memory stays flat whatever the size. The file lives in a [`SpooledFile`]
//! that deletes itself when dropped, so a rejected, oversized or aborted
//! upload (the request future is dropped mid-body) leaves nothing behind.

pub mod probe;

use std::path::{Path, PathBuf};

use axum::extract::multipart::{Field, Multipart, MultipartError};
use tokio::io::AsyncWriteExt;

use probe::{MediaInfo, ProbeError};

/// Form field names of the contract we keep.
pub const FILE_FIELD: &str = "uploadedFile";
pub const COURSE_FIELD: &str = "courseId";
pub const TOPIC_FIELD: &str = "nameOfTopic";
pub const PRIORITY_FIELD: &str = "priority";
const MAX_TEXT_FIELD: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    #[error("{0}")]
    InvalidField(String),
    #[error("upload is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("{0}")]
    Rejected(#[from] ProbeError),
    #[error("malformed or interrupted upload: {0}")]
    Malformed(String),
    #[error("could not store the upload: {0}")]
    Io(#[from] std::io::Error),
}

/// A file on disk that is deleted when dropped, unless [`SpooledFile::keep`]
/// was called.
#[derive(Debug)]
pub struct SpooledFile {
    path: PathBuf,
    keep: bool,
}

impl SpooledFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the file to `dest`; the guard now owns `dest`.
    pub async fn move_to(mut self, dest: PathBuf) -> std::io::Result<SpooledFile> {
        tokio::fs::rename(&self.path, &dest).await?;
        self.keep = true;
        Ok(SpooledFile { path: dest, keep: false })
    }

    /// The file is now referenced elsewhere (a committed lecture): keep it.
    pub fn keep(mut self) -> PathBuf {
        self.keep = true;
        self.path.clone()
    }
}

impl Drop for SpooledFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A received, probed upload, not yet stored as a lecture.
#[derive(Debug)]
pub struct Upload {
    pub file: SpooledFile,
    pub original_filename: Option<String>,
    pub course_id: String,
    pub name_of_topic: String,
    pub priority: i64,
    pub media: MediaInfo,
}

pub struct Ingest {
    pub uploads_dir: PathBuf,
    pub max_bytes: u64,
    pub ffprobe: PathBuf,
}

impl Ingest {
    /// Reads the whole form, then probes the file.
    pub async fn receive(&self, mut form: Multipart) -> Result<Upload, IngestError> {
        let mut file: Option<(SpooledFile, Option<String>)> = None;
        let (mut course_id, mut name_of_topic, mut priority) = (None, None, None);
        while let Some(field) = form.next_field().await.map_err(malformed)? {
            match field.name() {
                Some(FILE_FIELD) => {
                    let name = field.file_name().map(str::to_string);
                    file = Some((self.spool(field).await?, name));
                }
                Some(COURSE_FIELD) => course_id = Some(text(field, COURSE_FIELD).await?),
                Some(TOPIC_FIELD) => name_of_topic = Some(text(field, TOPIC_FIELD).await?),
                Some(PRIORITY_FIELD) => priority = Some(text(field, PRIORITY_FIELD).await?),
                // Unknown fields are drained and ignored, as the old API did.
                _ => drain(field).await?,
            }
        }
        let (file, original_filename) = file.ok_or(IngestError::MissingField(FILE_FIELD))?;
        let course_id = course_id.filter(|s| !s.is_empty()).ok_or(IngestError::MissingField(COURSE_FIELD))?;
        let name_of_topic = name_of_topic.filter(|s| !s.is_empty()).ok_or(IngestError::MissingField(TOPIC_FIELD))?;
        let priority = match priority.filter(|p| !p.is_empty()) {
            None => 0,
            Some(p) => p.parse::<i64>().ok().filter(|p| (-1000..=1000).contains(p)).ok_or_else(|| {
                IngestError::InvalidField(format!("`priority` must be a whole number from -1000 to 1000, got `{p}`"))
            })?,
        };
        let media = probe::probe(&self.ffprobe, file.path()).await?;
        Ok(Upload { file, original_filename, course_id, name_of_topic, priority, media })
    }

    async fn spool(&self, mut field: Field<'_>) -> Result<SpooledFile, IngestError> {
        tokio::fs::create_dir_all(&self.uploads_dir).await?;
        let spooled = SpooledFile {
            path: self.uploads_dir.join(format!(".incoming-{}", uuid::Uuid::new_v4().simple())),
            keep: false,
        };
        let mut out = tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::create(spooled.path()).await?);
        let mut written: u64 = 0;
        while let Some(chunk) = field.chunk().await.map_err(malformed)? {
            written += chunk.len() as u64;
            if written > self.max_bytes {
                return Err(IngestError::TooLarge { limit: self.max_bytes });
            }
            out.write_all(&chunk).await?;
        }
        out.flush().await?;
        out.into_inner().sync_all().await?;
        Ok(spooled)
    }
}

/// A text field, read chunk by chunk so an oversized one is refused before
/// it is held in memory (the upload route has no body limit).
async fn text(mut field: Field<'_>, name: &'static str) -> Result<String, IngestError> {
    let too_long = || IngestError::InvalidField(format!("`{name}` is longer than {MAX_TEXT_FIELD} characters"));
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(malformed)? {
        bytes.extend_from_slice(&chunk);
        // UTF-8 takes at most 4 bytes a character.
        if bytes.len() > MAX_TEXT_FIELD * 4 {
            return Err(too_long());
        }
    }
    let value =
        String::from_utf8(bytes).map_err(|_| IngestError::InvalidField(format!("`{name}` is not UTF-8 text")))?;
    let value = value.trim();
    if value.chars().count() > MAX_TEXT_FIELD {
        return Err(too_long());
    }
    Ok(value.to_string())
}

async fn drain(mut field: Field<'_>) -> Result<(), IngestError> {
    while field.chunk().await.map_err(malformed)?.is_some() {}
    Ok(())
}

fn malformed(e: MultipartError) -> IngestError {
    IngestError::Malformed(e.body_text())
}
