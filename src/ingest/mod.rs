//! Receiving an upload: stream the multipart body to disk, check the form
//! fields, probe the file. Nothing is created until the file is known to be
//! a video we can transcode.
//!
//! The body is never held in memory: each chunk is written as it arrives, so
//! memory stays flat whatever the size. The file lives in a [`SpooledFile`]
//! that deletes itself when dropped, so a rejected, oversized or aborted
//! upload (the request future is dropped mid-body) leaves nothing behind.

pub mod direct;
pub mod intake;
pub mod probe;
pub mod resumable;
pub mod retention;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use multer::{Field, Multipart};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use crate::captions::{CaptionError, Captions, CueError, MAX_CAPTION_BYTES};
use crate::media::MediaInfo;
use direct::Grant;
use intake::IntakeError;
use probe::ProbeError;
use resumable::UploadFields;

/// Form field names of the contract we keep.
pub const FILE_FIELD: &str = "uploadedFile";
pub const COURSE_FIELD: &str = "courseId";
pub const TOPIC_FIELD: &str = "nameOfTopic";
pub const PRIORITY_FIELD: &str = "priority";
/// Additions: a caption file and its language, and the thumbnail's time.
pub const CAPTIONS_FIELD: &str = "captions";
pub const CAPTIONS_LANGUAGE_FIELD: &str = "captionsLanguage";
pub const THUMBNAIL_TIME_FIELD: &str = "thumbnailTime";
const MAX_TEXT_FIELD: usize = 500;
/// A form has at most seven fields; a few more are tolerated and ignored.
const MAX_PARTS: usize = 10;
/// The longest file name kept (most file systems' limit).
pub const MAX_FILENAME_BYTES: usize = 255;
/// Room for the multipart framing and text fields around the file.
pub const FORM_OVERHEAD: u64 = 1 << 20;
/// While spooling, free disk space is checked after every this many bytes.
const DISK_CHECK_EVERY: u64 = 16 << 20;
/// How long an upload waits for a free ffprobe slot before it gets a 503.
const PROBE_WAIT: Duration = Duration::from_secs(30);

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
    #[error("{0}")]
    Captions(#[from] CaptionError),
    #[error("malformed or interrupted upload: {0}")]
    Malformed(String),
    #[error("{0}")]
    Stalled(IntakeError),
    #[error("the server is low on disk space and takes no uploads now; try again later")]
    DiskFull,
    #[error("the server is busy checking other uploads; try again shortly")]
    ProbesBusy(Duration),
    #[error("could not store the upload: {0}")]
    Io(#[from] std::io::Error),
}

impl From<multer::Error> for IngestError {
    fn from(e: multer::Error) -> Self {
        if let multer::Error::StreamReadFailed(inner) = &e {
            if let Some(cut) = inner.downcast_ref::<IntakeError>() {
                return match cut {
                    IntakeError::TooLarge(limit) => IngestError::TooLarge { limit: *limit },
                    IntakeError::Stalled(_) => IngestError::Stalled(cut.clone()),
                    IntakeError::HeaderTooLong | IntakeError::Read(_) => IngestError::Malformed(cut.to_string()),
                };
            }
        }
        IngestError::Malformed(e.to_string())
    }
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
    pub fields: UploadFields,
    pub media: MediaInfo,
    /// A caption file sent with the video, checked.
    pub captions: Option<Captions>,
}

pub struct Ingest {
    pub uploads_dir: PathBuf,
    pub max_bytes: u64,
    pub ffprobe: PathBuf,
    /// Uploads are refused while the disk has less free space than this.
    pub min_free_disk: u64,
    pub body_idle_timeout: Duration,
    /// ffprobe runs at once for uploads.
    pub probes: Arc<Semaphore>,
}

impl Ingest {
    /// Reads the whole form from `body` (a `multipart/form-data` body with
    /// `boundary`), then probes the file.
    ///
    /// Through a direct upload's `grant`, its fields stand (the form's text
    /// fields are read and ignored) and its size limit, if smaller, applies.
    pub async fn receive<S, E>(&self, body: S, boundary: &str, grant: Option<&Grant>) -> Result<Upload, IngestError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
        E: std::fmt::Display,
    {
        let max_bytes = grant.map_or(self.max_bytes, |g| g.max_bytes.min(self.max_bytes));
        let body = intake::bounded(body, boundary, max_bytes + FORM_OVERHEAD, self.body_idle_timeout);
        let mut form = Multipart::new(body, boundary);
        let mut file: Option<(SpooledFile, Option<String>)> = None;
        let (mut course_id, mut name_of_topic, mut priority) = (None, None, None);
        let (mut captions, mut captions_language, mut thumbnail_time) = (None, None, None);
        let mut parts = 0;
        while let Some(field) = form.next_field().await? {
            parts += 1;
            if parts > MAX_PARTS {
                return Err(IngestError::InvalidField(format!("a form has at most {MAX_PARTS} parts")));
            }
            if let Some(name) = field.file_name() {
                if name.len() > MAX_FILENAME_BYTES {
                    return Err(IngestError::InvalidField(format!(
                        "the file name is longer than {MAX_FILENAME_BYTES} bytes"
                    )));
                }
            }
            if field.name() == Some(CAPTIONS_FIELD) {
                if captions.is_some() {
                    return Err(IngestError::InvalidField(format!("send one `{CAPTIONS_FIELD}` file per upload")));
                }
                captions = Some(small_file(field).await?);
                continue;
            }
            let is_file = field.name() == Some(FILE_FIELD) || field.file_name().is_some();
            if is_file && file.is_some() {
                return Err(IngestError::InvalidField(format!(
                    "send one file per upload, in the `{FILE_FIELD}` field"
                )));
            }
            match field.name() {
                Some(FILE_FIELD) => {
                    let name = field.file_name().map(str::to_string);
                    file = Some((self.spool(field, max_bytes).await?, name));
                }
                Some(COURSE_FIELD) => course_id = Some(text(field, COURSE_FIELD).await?),
                Some(TOPIC_FIELD) => name_of_topic = Some(text(field, TOPIC_FIELD).await?),
                Some(PRIORITY_FIELD) => priority = Some(text(field, PRIORITY_FIELD).await?),
                Some(CAPTIONS_LANGUAGE_FIELD) => captions_language = Some(text(field, CAPTIONS_LANGUAGE_FIELD).await?),
                Some(THUMBNAIL_TIME_FIELD) => thumbnail_time = Some(text(field, THUMBNAIL_TIME_FIELD).await?),
                Some(_) | None if is_file => {
                    return Err(IngestError::InvalidField(format!("the file goes in the `{FILE_FIELD}` field")));
                }
                // Unknown text fields are read (bounded) and ignored, as the old API did.
                _ => {
                    text(field, "unknown field").await?;
                }
            }
        }
        let (file, original_filename) = file.ok_or(IngestError::MissingField(FILE_FIELD))?;
        let fields = match grant {
            Some(grant) => {
                UploadFields { filename: grant.fields.filename.clone().or(original_filename), ..grant.fields.clone() }
            }
            None => check_fields(course_id, name_of_topic, original_filename, priority, thumbnail_time)?,
        };
        let captions = match (captions, captions_language) {
            (None, None) => None,
            (Some(bytes), Some(language)) => Some(Captions::from_file(&language, &bytes)?),
            (Some(_), None) => return Err(IngestError::MissingField(CAPTIONS_LANGUAGE_FIELD)),
            (None, Some(_)) => return Err(IngestError::MissingField(CAPTIONS_FIELD)),
        };
        let media = self.probe(file.path()).await?;
        check_thumbnail_time(&fields, &media)?;
        Ok(Upload { file, fields, media, captions })
    }

    /// Probes a received file, in one of the bounded probe slots.
    pub async fn probe(&self, path: &Path) -> Result<MediaInfo, IngestError> {
        let _slot = tokio::time::timeout(PROBE_WAIT, self.probes.acquire())
            .await
            .map_err(|_| IngestError::ProbesBusy(Duration::from_secs(5)))?
            .map_err(|_| IngestError::ProbesBusy(Duration::from_secs(5)))?;
        Ok(probe::probe(&self.ffprobe, path).await?)
    }

    /// Refuses uploads while free disk space is under the floor (`expected`:
    /// bytes the upload is about to write, if known).
    pub fn check_disk(&self, expected: u64) -> Result<(), IngestError> {
        if self.min_free_disk == 0 {
            return Ok(());
        }
        std::fs::create_dir_all(&self.uploads_dir)?;
        let free = free_space(&self.uploads_dir)?;
        if free < self.min_free_disk.saturating_add(expected) {
            tracing::warn!(free, floor = self.min_free_disk, "upload refused: low on disk space");
            return Err(IngestError::DiskFull);
        }
        Ok(())
    }

    async fn spool(&self, mut field: Field<'_>, max_bytes: u64) -> Result<SpooledFile, IngestError> {
        tokio::fs::create_dir_all(&self.uploads_dir).await?;
        let spooled = SpooledFile {
            path: self.uploads_dir.join(format!(".incoming-{}", uuid::Uuid::new_v4().simple())),
            keep: false,
        };
        let mut out = tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::create(spooled.path()).await?);
        let mut written: u64 = 0;
        let mut next_disk_check = DISK_CHECK_EVERY;
        while let Some(chunk) = field.chunk().await? {
            written += chunk.len() as u64;
            if written > max_bytes {
                return Err(IngestError::TooLarge { limit: max_bytes });
            }
            if written >= next_disk_check {
                next_disk_check += DISK_CHECK_EVERY;
                self.check_disk(0)?;
            }
            out.write_all(&chunk).await?;
            crate::metrics::uploaded_bytes(chunk.len() as u64);
        }
        out.flush().await?;
        out.into_inner().sync_all().await?;
        Ok(spooled)
    }
}

/// The form's fields, checked the same way however they came (a multipart
/// form, or tus's `Upload-Metadata`).
pub fn check_fields(
    course_id: Option<String>,
    name_of_topic: Option<String>,
    filename: Option<String>,
    priority: Option<String>,
    thumbnail_time: Option<String>,
) -> Result<UploadFields, IngestError> {
    let text = |value: Option<String>, name: &'static str| -> Result<Option<String>, IngestError> {
        let value = value.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        if value.as_ref().is_some_and(|v| v.chars().count() > MAX_TEXT_FIELD) {
            return Err(IngestError::InvalidField(format!("`{name}` is longer than {MAX_TEXT_FIELD} characters")));
        }
        Ok(value)
    };
    let course_id = text(course_id, COURSE_FIELD)?.ok_or(IngestError::MissingField(COURSE_FIELD))?;
    let name_of_topic = text(name_of_topic, TOPIC_FIELD)?.ok_or(IngestError::MissingField(TOPIC_FIELD))?;
    if filename.as_ref().is_some_and(|f| f.len() > MAX_FILENAME_BYTES) {
        return Err(IngestError::InvalidField(format!("the file name is longer than {MAX_FILENAME_BYTES} bytes")));
    }
    let priority = match text(priority, PRIORITY_FIELD)? {
        None => 0,
        Some(p) => p.parse::<i64>().ok().filter(|p| (-1000..=1000).contains(p)).ok_or_else(|| {
            IngestError::InvalidField(format!("`priority` must be a whole number from -1000 to 1000, got `{p}`"))
        })?,
    };
    let thumbnail_time = match text(thumbnail_time, THUMBNAIL_TIME_FIELD)? {
        None => None,
        Some(t) => Some(t.parse::<f64>().ok().filter(|t| t.is_finite() && *t >= 0.0).ok_or_else(|| {
            IngestError::InvalidField(format!(
                "`{THUMBNAIL_TIME_FIELD}` must be a number of seconds from the start, like `12.5`, got `{t}`"
            ))
        })?),
    };
    Ok(UploadFields { course_id, name_of_topic, filename, priority, thumbnail_time })
}

/// A thumbnail time past the end of the probed video is refused: the
/// caller meant another video, or minutes for seconds.
pub fn check_thumbnail_time(fields: &UploadFields, media: &MediaInfo) -> Result<(), IngestError> {
    match fields.thumbnail_time {
        Some(t) if t > media.duration_seconds => Err(IngestError::InvalidField(format!(
            "`{THUMBNAIL_TIME_FIELD}` ({t} s) is past the end of the video ({:.1} s long)",
            media.duration_seconds
        ))),
        _ => Ok(()),
    }
}

/// A small file part (captions), read whole but never past
/// [`MAX_CAPTION_BYTES`].
async fn small_file(mut field: Field<'_>) -> Result<Vec<u8>, IngestError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await? {
        if bytes.len() + chunk.len() > MAX_CAPTION_BYTES {
            return Err(CaptionError::Cues(CueError::TooLarge).into());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// A text field, read chunk by chunk so an oversized one is refused before
/// it is held in memory (the upload route has no body limit).
async fn text(mut field: Field<'_>, name: &'static str) -> Result<String, IngestError> {
    let too_long = || IngestError::InvalidField(format!("`{name}` is longer than {MAX_TEXT_FIELD} characters"));
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await? {
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

/// Free bytes for unprivileged users on the file system holding `path`.
pub fn free_space(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a valid C string and `stat` is written by statvfs
    // before it is read (only on success).
    let stat = unsafe {
        if libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        stat.assume_init()
    };
    #[allow(clippy::unnecessary_cast)] // the field types differ between Linux and macOS
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}
