//! Uploaded sources do not pile up.
//!
//! A completed lecture's source is removed when it completes, and a deleted
//! one's when it is deleted. What is left to a timer:
//! - sources of lectures that failed for good, kept `source_retention` so an
//!   operator can retry them, then removed;
//! - files in the uploads directory that no lecture owns: a spool file of a
//!   process that was killed mid-upload, or a source whose lecture is gone.
//!   They are left alone for [`ORPHAN_AGE`], far longer than any upload or
//!   commit can take, so a file about to be owned is never touched.
//!
//! `housekeeping` runs [`Retention::sweep`] on its timer.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::domain::{now_ms, LectureId};
use crate::lectures::LectureStore;

/// Files in the uploads directory untouched for this long, and owned by no
/// lecture, are removed.
pub const ORPHAN_AGE: Duration = Duration::from_secs(24 * 3600);

pub struct Retention {
    pub uploads_dir: PathBuf,
    pub lectures: LectureStore,
    /// Sources of failed lectures are kept this long after the failure.
    pub failed_source_retention: Duration,
}

/// What one sweep removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub failed_sources: usize,
    pub orphans: usize,
}

impl Retention {
    /// Removes what is past its time; run by `housekeeping` on its timer.
    pub async fn sweep(&self) -> Result<Swept, crate::lectures::LectureStoreError> {
        let mut swept = Swept::default();
        let cutoff = now_ms() - self.failed_source_retention.as_millis() as i64;
        let mut after = String::new();
        loop {
            let page = self.lectures.failed_before(cutoff, &after, 200).await?;
            let Some(last) = page.last() else { break };
            after = last.id.to_string();
            for lecture in &page {
                if tokio::fs::remove_file(&lecture.source_path).await.is_ok() {
                    tracing::info!(lecture = %lecture.id, "source of a failed lecture removed after the retention period");
                    swept.failed_sources += 1;
                }
            }
        }
        let Ok(mut entries) = tokio::fs::read_dir(&self.uploads_dir).await else { return Ok(swept) };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let Ok(meta) = entry.metadata().await else { continue };
            let age = meta.modified().ok().and_then(|m| SystemTime::now().duration_since(m).ok()).unwrap_or_default();
            if !meta.is_file() || age < ORPHAN_AGE {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            // Sources are `<lecture id>.<demuxer>`; spool files `.incoming-*`.
            let owner = name.split('.').next().and_then(|stem| stem.parse::<LectureId>().ok());
            let owned = match owner {
                Some(id) => self.lectures.get(&id).await?.is_some_and(|l| l.source_path == entry.path()),
                None => false,
            };
            if !owned && tokio::fs::remove_file(entry.path()).await.is_ok() {
                tracing::info!(file = %name, "upload owned by no lecture removed");
                swept.orphans += 1;
            }
        }
        Ok(swept)
    }
}
