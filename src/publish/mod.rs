//! Publishing an attempt's output to storage while ffmpeg is still writing it.
//!
//! ffmpeg lists a segment in its (EVENT) media playlist only once the segment
//! is complete, so the [`Publisher`] ships every listed segment as soon as it
//! appears and the upload overlaps the encode. At the end it publishes the
//! media playlists (rewritten to VOD), the thumbnail, and the master playlist
//! last: a master that exists points at a complete ladder.
//!
//! Each attempt publishes under its own prefix (`<lecture>/<attempt tag>/`),
//! so a duplicate or stale attempt can never overwrite a published video.

pub mod local;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use crate::transcode::command::{MASTER_PLAYLIST, MEDIA_PLAYLIST, THUMBNAIL};
use crate::transcode::plan::Plan;
use crate::transcode::playlist;

pub use local::LocalStorage;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage I/O error on {key}: {source}")]
    Io { key: String, source: std::io::Error },
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
    /// The public URL of `key`.
    fn url(&self, key: &str) -> String;
}

/// Publishes one attempt's output directory under `prefix`.
pub struct Publisher {
    storage: Arc<dyn Storage>,
    prefix: String,
    out_dir: PathBuf,
    published: HashSet<String>,
}

impl Publisher {
    pub fn new(storage: Arc<dyn Storage>, prefix: String, out_dir: PathBuf) -> Publisher {
        Publisher { storage, prefix, out_dir, published: HashSet::new() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Publishes every segment the media playlists list and that has not
    /// been published yet.
    pub async fn sweep(&mut self, plan: &Plan) -> Result<usize, StorageError> {
        let mut count = 0;
        for rendition in &plan.renditions {
            let dir = self.out_dir.join(rendition.name());
            let Ok(text) = tokio::fs::read_to_string(dir.join(MEDIA_PLAYLIST)).await else { continue };
            for segment in playlist::segments(&text) {
                let key = format!("{}/{}/{}", self.prefix, rendition.name(), segment);
                if self.published.contains(&key) {
                    continue;
                }
                let path = dir.join(segment);
                if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
                    // Listed but not renamed into place yet: next sweep.
                    continue;
                }
                self.storage.put_file(&key, &path).await?;
                self.published.insert(key);
                count += 1;
            }
        }
        Ok(count)
    }

    /// After ffmpeg succeeded: the remaining segments, the media playlists
    /// as VOD, the thumbnail, and the master playlist last.
    pub async fn finish(&mut self, plan: &Plan) -> Result<(), StorageError> {
        self.sweep(plan).await?;
        for rendition in &plan.renditions {
            let path = self.out_dir.join(rendition.name()).join(MEDIA_PLAYLIST);
            let text = tokio::fs::read_to_string(&path)
                .await
                .map_err(|source| StorageError::Io { key: path.display().to_string(), source })?;
            let key = format!("{}/{}/{}", self.prefix, rendition.name(), MEDIA_PLAYLIST);
            self.storage.put_bytes(&key, playlist::to_vod(&text).into_bytes()).await?;
        }
        let thumbnail = self.out_dir.join(THUMBNAIL);
        if tokio::fs::try_exists(&thumbnail).await.unwrap_or(false) {
            self.storage.put_file(&self.thumbnail_key(), &thumbnail).await?;
        }
        let master = playlist::master(plan);
        self.storage.put_bytes(&self.master_key(), master.into_bytes()).await
    }

    pub fn master_key(&self) -> String {
        format!("{}/{}", self.prefix, MASTER_PLAYLIST)
    }

    pub fn thumbnail_key(&self) -> String {
        format!("{}/{}", self.prefix, THUMBNAIL)
    }
}
