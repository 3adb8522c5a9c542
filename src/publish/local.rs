//! Storage on the local filesystem, under `<data-dir>/media/`, served by the
//! API at `/media/...`.
//!
//! Every write lands under a temporary name and is renamed into place, so a
//! reader never sees half a file. Files already on the same filesystem (ffmpeg's
//! output in `<data-dir>/work/`) are moved, not copied.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{Storage, StorageError};

#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
    /// Public URL of `root`, without trailing slash.
    base_url: String,
}

impl LocalStorage {
    pub fn new(root: PathBuf, base_url: String) -> LocalStorage {
        LocalStorage { root, base_url }
    }

    fn path(&self, key: &str) -> PathBuf {
        debug_assert!(!key.split('/').any(|part| part == ".." || part.is_empty()), "bad key {key}");
        self.root.join(key)
    }

    fn temp_path(&self, key: &str) -> PathBuf {
        let path = self.path(key);
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        path.with_file_name(format!(".{name}.{}.part", uuid::Uuid::new_v4().simple()))
    }
}

fn io_error(key: &str) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io { key: key.to_string(), source }
}

#[async_trait]
impl Storage for LocalStorage {
    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StorageError> {
        let target = self.path(key);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io_error(key))?;
        }
        if tokio::fs::rename(path, &target).await.is_ok() {
            return Ok(());
        }
        // Another filesystem: copy under a temporary name, then rename.
        let temp = self.temp_path(key);
        let copied = tokio::fs::copy(path, &temp).await;
        if let Err(e) = copied {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(io_error(key)(e));
        }
        tokio::fs::rename(&temp, &target).await.map_err(io_error(key))
    }

    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        let target = self.path(key);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io_error(key))?;
        }
        let temp = self.temp_path(key);
        if let Err(e) = tokio::fs::write(&temp, bytes).await {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(io_error(key)(e));
        }
        tokio::fs::rename(&temp, &target).await.map_err(io_error(key))
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError> {
        match tokio::fs::remove_dir_all(self.path(prefix)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(prefix)(e)),
        }
    }

    async fn get_bytes(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        match tokio::fs::read(self.path(key)).await {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StorageError::NotFound(key.to_string())),
            Err(e) => Err(io_error(key)(e)),
        }
    }

    async fn list_children(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let mut names = Vec::new();
        let mut entries = match tokio::fs::read_dir(self.path(prefix)).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            Err(e) => return Err(io_error(prefix)(e)),
        };
        while let Some(entry) = entries.next_entry().await.map_err(io_error(prefix))? {
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    fn url(&self, key: &str) -> String {
        format!("{}/{}", self.base_url, key)
    }
}
