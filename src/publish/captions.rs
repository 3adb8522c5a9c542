//! Publishing caption tracks as HLS subtitles renditions, and keeping the
//! master playlist's subtitles group in line with the stored tracks.
//!
//! A track is published under the attempt's prefix as
//! `captions-<language>/index.m3u8` plus one WebVTT segment per media
//! segment (durations read from a published media playlist, so the two
//! switch together). The master then names every published track.
//!
//! Tracks change while a lecture is processing or long after it completed,
//! from more than one process. [`refresh`] publishes what is stored and
//! not yet published, rewrites the master, then reads the stored list
//! again and repeats until it did not change. Whichever refresh finishes
//! last has therefore seen every track stored before it finished, and its
//! master write is the last one; no lock is needed.

use std::sync::Arc;

use super::{Storage, StorageError};
use crate::captions::{cues, CaptionStore, CaptionSummary, StoredCaptions};
use crate::transcode::command::{MASTER_PLAYLIST, MEDIA_PLAYLIST};
use crate::transcode::playlist;

/// Rounds of [`refresh`] before it gives up: tracks added faster than they
/// can be published. The next refresh picks up what is left.
const MAX_ROUNDS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum CaptionPublishError {
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Events(#[from] crate::events::EventError),
}

/// Publishes one track under `prefix`, cut to the media segments of
/// `durations`.
pub async fn publish_track(
    storage: &dyn Storage,
    prefix: &str,
    durations: &[f64],
    track: &StoredCaptions,
) -> Result<(), StorageError> {
    // Stored text is our own normal form; it reads back without error.
    let cues = cues::parse(track.vtt.as_bytes()).unwrap_or_default();
    let dir = format!("{prefix}/{}", playlist::captions_dir(&track.language));
    for (i, segment) in cues::segments(&cues, durations).into_iter().enumerate() {
        storage.put_bytes(&format!("{dir}/{}", playlist::subtitle_segment(i)), segment.into_bytes()).await?;
    }
    // The playlist last, once every segment it names is stored.
    storage.put_bytes(&format!("{dir}/{MEDIA_PLAYLIST}"), playlist::subtitles(durations).into_bytes()).await
}

/// Segment durations of the rendition `rendition` published under `prefix`.
pub async fn published_durations(
    storage: &dyn Storage,
    prefix: &str,
    rendition: &str,
) -> Result<Vec<f64>, StorageError> {
    let key = format!("{prefix}/{rendition}/{MEDIA_PLAYLIST}");
    let text = storage.get_bytes(&key).await?;
    Ok(playlist::segment_durations(&String::from_utf8_lossy(&text)))
}

/// Publishes every stored track of `lecture` not yet published under
/// `prefix` and names them all in its master, until the stored list stops
/// changing (see the module docs). `rendition` is a published rendition
/// whose segments the captions follow. `force_master` rewrites the master
/// even when no track was new (a track was just stored). Returns the
/// tracks published.
pub async fn refresh(
    store: &CaptionStore,
    storage: &Arc<dyn Storage>,
    lecture: &str,
    prefix: &str,
    rendition: &str,
    force_master: bool,
) -> Result<Vec<CaptionSummary>, CaptionPublishError> {
    let mut seen: Option<Vec<(String, i64)>> = None;
    let mut durations = None;
    let mut listed = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let tracks = store.list(lecture).await?;
        let state: Vec<(String, i64)> = tracks.iter().map(|t| (t.language.clone(), t.revision)).collect();
        if seen.as_ref() == Some(&state) {
            break;
        }
        let stale: Vec<&StoredCaptions> =
            tracks.iter().filter(|t| t.published_prefix.as_deref() != Some(prefix)).collect();
        if !stale.is_empty() {
            if durations.is_none() {
                durations = Some(published_durations(storage.as_ref(), prefix, rendition).await?);
            }
            let durations = durations.as_deref().unwrap_or_default();
            for track in &stale {
                publish_track(storage.as_ref(), prefix, durations, track).await?;
            }
        }
        listed = tracks.iter().map(StoredCaptions::summary).collect();
        if !stale.is_empty() || force_master || seen.is_some() {
            let key = format!("{prefix}/{MASTER_PLAYLIST}");
            let master = storage.get_bytes(&key).await?;
            let master = playlist::with_subtitles(&String::from_utf8_lossy(&master), &listed);
            storage.put_bytes(&key, master.into_bytes()).await?;
        }
        for track in &stale {
            store.mark_published(lecture, &track.language, track.revision, prefix).await?;
        }
        store.set_listed(lecture, prefix, &listed).await?;
        seen = Some(state);
    }
    Ok(listed)
}
