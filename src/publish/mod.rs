//! Publishing an attempt's output to storage while ffmpeg is still writing it.
//!
//! ffmpeg lists a segment in its (EVENT) media playlist only once the segment
//! is complete, so the [`Publisher`] ships every listed segment as soon as it
//! appears and the upload overlaps the encode. After the segments a playlist
//! lists are stored, the playlist itself is published (EVENT, no ENDLIST,
//! with `EXT-X-START` so players begin at 0, not at the "live" edge), and
//! once every rendition has one, the master: from then on the
//! video plays while it is still being encoded, and a player that starts
//! early keeps reloading the playlists to the end. At the end the media
//! playlists are rewritten to VOD (with ENDLIST), and the thumbnail, seek
//! previews and caption tracks ([`captions`]) published.
//! The master lists the whole ladder from the start, and a playlist is
//! published only after every file it names (the fMP4 initialization
//! section, written with the first segment, and the segments).
//!
//! Each attempt publishes under its own prefix (`<lecture>/<attempt tag>/`),
//! so a duplicate or stale attempt can never overwrite a published video.
//!
//! Two backends implement [`Storage`]: [`LocalStorage`] (the default, served
//! by the API at `/media`) and [`S3Storage`] (any S3-compatible store).

pub mod bucket_cors;
pub mod captions;
pub mod local;
pub mod s3;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;

use crate::captions::StoredCaptions;
use crate::transcode::command::{MASTER_PLAYLIST, MEDIA_PLAYLIST, THUMBNAIL};
use crate::transcode::plan::Plan;
use crate::transcode::playlist;
use crate::transcode::previews::{STORYBOARD_IMAGE, STORYBOARD_VTT};

pub use local::LocalStorage;
pub use s3::S3Storage;

/// Uploads a publisher runs at once unless configured otherwise.
pub const DEFAULT_UPLOAD_CONCURRENCY: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage I/O error on {key}: {source}")]
    Io { key: String, source: std::io::Error },
    /// A remote store failed; the message names the endpoint, the key and
    /// the last error, so it can stand alone in a job's `processingError`.
    #[error("{0}")]
    Remote(String),
    /// The key does not exist.
    #[error("no object at {0}")]
    NotFound(String),
}

/// Where published files go. Keys are `/`-separated relative paths.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Stores the file at `path` under `key`. The local file may be moved.
    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StorageError>;
    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError>;
    /// Removes every object under `prefix/`.
    async fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError>;
    /// The names directly under `prefix/` (one level, like a directory).
    async fn list_children(&self, prefix: &str) -> Result<Vec<String>, StorageError>;
    /// The object at `key`, whole. Used for playlists, which are small.
    async fn get_bytes(&self, key: &str) -> Result<Vec<u8>, StorageError>;
    /// The URL clients use for `key` (the base of `videoLink`).
    fn url(&self, key: &str) -> String;
    /// An expiring URL that grants a GET of `key`, when this storage is
    /// private and hands out signed links; `None` when [`Storage::url`] is
    /// already readable by anyone.
    async fn presigned_url(&self, _key: &str) -> Result<Option<String>, StorageError> {
        Ok(None)
    }
    /// How many files a [`Publisher`] uploads at once.
    fn upload_concurrency(&self) -> usize {
        DEFAULT_UPLOAD_CONCURRENCY
    }
}

/// `(Content-Type, Cache-Control)` of a published file, by extension.
/// Segments never change once published; playlists are refetched soon.
pub fn object_headers(key: &str) -> Option<(&'static str, &'static str)> {
    let ext = key.rsplit_once('.').map(|(_, ext)| ext)?;
    Some(match ext {
        "m3u8" => ("application/vnd.apple.mpegurl", "public, max-age=2"),
        "ts" => ("video/mp2t", "public, max-age=31536000, immutable"),
        "m4s" | "mp4" => ("video/mp4", "public, max-age=31536000, immutable"),
        "jpg" | "jpeg" => ("image/jpeg", "public, max-age=86400"),
        // Captions can be replaced under the same name.
        "vtt" => ("text/vtt; charset=utf-8", "public, max-age=60"),
        _ => return None,
    })
}

/// Publishes one attempt's output directory under `prefix`.
pub struct Publisher {
    storage: Arc<dyn Storage>,
    prefix: String,
    out_dir: PathBuf,
    /// Keys of the files (segments, init sections) already stored.
    published: HashSet<String>,
    /// The media playlist text last published, per rendition.
    playlists: HashMap<String, String>,
    master_published: bool,
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    /// Files stored in this sweep (segments and init sections).
    pub files: usize,
    /// The master was published in this sweep: the video is now playable.
    pub became_playable: bool,
}

impl Publisher {
    pub fn new(storage: Arc<dyn Storage>, prefix: String, out_dir: PathBuf) -> Publisher {
        Publisher {
            storage,
            prefix,
            out_dir,
            published: HashSet::new(),
            playlists: HashMap::new(),
            master_published: false,
        }
    }

    /// Publishes every segment the media playlists list and that has not
    /// been published yet, [`Storage::upload_concurrency`] at a time.
    ///
    /// On failure every started upload is still awaited (so a multipart
    /// upload can abort itself) and the ones that succeeded are remembered;
    /// then the first error is returned.
    pub async fn sweep(&mut self, plan: &Plan) -> Result<Sweep, StorageError> {
        let mut pending = Vec::new();
        let mut texts = Vec::new();
        for rendition in &plan.renditions {
            let dir = self.out_dir.join(rendition.name());
            let Ok(text) = tokio::fs::read_to_string(dir.join(MEDIA_PLAYLIST)).await else { continue };
            texts.push((rendition.name().to_string(), text.clone()));
            for file in playlist::files(&text) {
                let key = format!("{}/{}/{}", self.prefix, rendition.name(), file);
                if self.published.contains(&key) {
                    continue;
                }
                let path = dir.join(file);
                if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
                    // Listed but not renamed into place yet: next sweep.
                    continue;
                }
                pending.push((key, path));
            }
        }
        let storage = self.storage.clone();
        let storage = &storage;
        let mut uploads = futures::stream::iter(pending)
            .map(|(key, path)| async move {
                let size = tokio::fs::metadata(&path).await.map_or(0, |m| m.len());
                storage.put_file(&key, &path).await?;
                crate::metrics::published_bytes(size);
                Ok::<_, StorageError>(key)
            })
            .buffer_unordered(self.storage.upload_concurrency().max(1));
        let mut count = 0;
        let mut first_error = None;
        while let Some(result) = uploads.next().await {
            match result {
                Ok(key) => {
                    self.published.insert(key);
                    count += 1;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        drop(uploads);
        if let Some(e) = first_error {
            return Err(e);
        }
        let became_playable = self.publish_playlists(plan, texts).await?;
        Ok(Sweep { files: count, became_playable })
    }

    /// Publishes each media playlist whose segments are all stored, then the
    /// master once every rendition has one. Returns whether the master was
    /// published now.
    async fn publish_playlists(&mut self, plan: &Plan, texts: Vec<(String, String)>) -> Result<bool, StorageError> {
        for (name, text) in texts {
            let files = playlist::files(&text);
            let complete = files.iter().all(|f| self.published.contains(&format!("{}/{name}/{f}", self.prefix)));
            if files.is_empty() || !complete || self.playlists.get(&name) == Some(&text) {
                continue;
            }
            let key = format!("{}/{name}/{MEDIA_PLAYLIST}", self.prefix);
            self.storage.put_bytes(&key, playlist::for_players(&text).into_bytes()).await?;
            self.playlists.insert(name, text);
        }
        if self.master_published || !plan.renditions.iter().all(|r| self.playlists.contains_key(r.name())) {
            return Ok(false);
        }
        self.storage.put_bytes(&self.master_key(), playlist::master(plan).into_bytes()).await?;
        self.master_published = true;
        Ok(true)
    }

    /// After ffmpeg succeeded: the remaining segments, the media playlists
    /// as VOD, the thumbnail and seek previews, the caption tracks, and the
    /// master playlist naming them (again, or for the first time for a
    /// video shorter than a segment).
    pub async fn finish(&mut self, plan: &Plan, captions: &[StoredCaptions]) -> Result<(), StorageError> {
        self.sweep(plan).await?;
        let mut durations = Vec::new();
        for rendition in &plan.renditions {
            let path = self.out_dir.join(rendition.name()).join(MEDIA_PLAYLIST);
            let text = tokio::fs::read_to_string(&path)
                .await
                .map_err(|source| StorageError::Io { key: path.display().to_string(), source })?;
            // `completed` must mean every object the playlist names is stored.
            if let Some(missing) = playlist::files(&text)
                .into_iter()
                .find(|s| !self.published.contains(&format!("{}/{}/{s}", self.prefix, rendition.name())))
            {
                return Err(StorageError::Remote(format!("{}/{missing} was never stored", rendition.name())));
            }
            let key = format!("{}/{}/{}", self.prefix, rendition.name(), MEDIA_PLAYLIST);
            self.storage.put_bytes(&key, playlist::to_vod(&text).into_bytes()).await?;
            if durations.is_empty() {
                durations = playlist::segment_durations(&text);
            }
        }
        // The sprite before the WebVTT that points into it.
        for file in [THUMBNAIL, STORYBOARD_IMAGE, STORYBOARD_VTT] {
            let path = self.out_dir.join(file);
            if tokio::fs::try_exists(&path).await.unwrap_or(false) {
                self.storage.put_file(&format!("{}/{file}", self.prefix), &path).await?;
            }
        }
        for track in captions {
            captions::publish_track(self.storage.as_ref(), &self.prefix, &durations, track).await?;
        }
        let listed: Vec<_> = captions.iter().map(StoredCaptions::summary).collect();
        let master = playlist::with_subtitles(&playlist::master(plan), &listed);
        self.storage.put_bytes(&self.master_key(), master.into_bytes()).await
    }

    pub fn master_key(&self) -> String {
        format!("{}/{}", self.prefix, MASTER_PLAYLIST)
    }
}

/// The API route that serves a published key (`<lecture>/<attempt>/<file>`)
/// when objects are private: `/api/lectures/<lecture>/<file>`. The route
/// looks the attempt up itself, so links survive a re-publish.
pub fn playback_route(key: &str) -> Option<String> {
    let mut parts = key.splitn(3, '/');
    let (lecture, _attempt, file) = (parts.next()?, parts.next()?, parts.next()?);
    (!lecture.is_empty() && !file.is_empty()).then(|| format!("/api/lectures/{lecture}/{file}"))
}
