//! Playback through the API, for storage whose objects are not public:
//! `GET /api/lectures/{id}/master.m3u8`, `.../{rendition}/index.m3u8` and
//! `.../thumbnail.jpg`.
//!
//! With `VIDPIPE_SIGNED_URL_TTL` the bucket stays private and `videoLink`
//! points here. A presigned URL covers one object, so a player that loaded
//! a presigned master could not resolve the playlist's relative references.
//! Instead the master is served from this route unchanged: its relative
//! variant URIs (`240p/index.m3u8`) resolve to the media-playlist route
//! below, which serves the stored playlist with every segment (and the
//! fMP4 initialization section) rewritten to an absolute presigned URL.
//! Segments, the bulk of the bytes, go straight from the store to the
//! player. The thumbnail route redirects to a
//! presigned URL.
//!
//! With public storage the routes work too (segment URIs become the
//! public URLs), but `videoLink` does not point here.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};

use super::lectures::parse_id;
use super::{ApiError, AppState};
use crate::lectures::Lecture;
use crate::publish::StorageError;
use crate::transcode::command::{MASTER_PLAYLIST, MEDIA_PLAYLIST, THUMBNAIL};
use crate::transcode::playlist;

/// The prefix to play from: the completed video, or while the job runs the
/// attempt that is already playable (progressive publishing).
async fn published(app: &AppState, raw: &str) -> Result<(Lecture, String), ApiError> {
    let id = parse_id(raw)?;
    let lecture =
        app.lectures.get(&id).await?.ok_or_else(|| ApiError::NotFound(format!("no lecture with id `{raw}`")))?;
    let prefix = lecture
        .published_prefix
        .clone()
        .or_else(|| lecture.playable_prefix.clone())
        .ok_or_else(|| ApiError::NotFound(format!("lecture `{raw}` has no published video yet")))?;
    Ok((lecture, prefix))
}

fn storage_error(e: StorageError) -> ApiError {
    match e {
        StorageError::NotFound(key) => ApiError::NotFound(format!("{key} is not in storage")),
        other => ApiError::Internal(other.to_string()),
    }
}

fn playlist_response(text: String) -> Response {
    let mut response = text.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.apple.mpegurl"));
    // The body holds URLs that expire: never serve it from a cache.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}

/// A URI line of a playlist we wrote: a plain file name, nothing that could
/// climb out of the lecture's prefix.
fn is_plain_name(uri: &str) -> bool {
    !uri.is_empty() && !uri.starts_with('.') && uri.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

pub async fn master(State(app): State<AppState>, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let (_, prefix) = published(&app, &raw).await?;
    let bytes = app.storage.get_bytes(&format!("{prefix}/{MASTER_PLAYLIST}")).await.map_err(storage_error)?;
    // Variant URIs stay relative: from this route they resolve to `media`.
    let text = String::from_utf8(bytes).map_err(|e| ApiError::Internal(format!("master playlist of {raw}: {e}")))?;
    Ok(playlist_response(text))
}

pub async fn media(
    State(app): State<AppState>,
    Path((raw, rendition)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (_, prefix) = published(&app, &raw).await?;
    // While the job runs the lecture lists no renditions yet; the name only
    // has to be a plain file name inside the prefix.
    if !is_plain_name(&rendition) {
        return Err(ApiError::NotFound(format!("lecture `{raw}` has no rendition `{rendition}`")));
    }
    let key = format!("{prefix}/{rendition}/{MEDIA_PLAYLIST}");
    let bytes = app.storage.get_bytes(&key).await.map_err(storage_error)?;
    let text = String::from_utf8(bytes).map_err(|e| ApiError::Internal(format!("{key}: {e}")))?;
    if let Some(tag) = playlist::foreign_uri_tag(&text) {
        return Err(ApiError::Internal(format!("{key} has a tag whose URI would not be signed: {tag}")));
    }
    let mut urls = HashMap::new();
    for uri in playlist::files(&text) {
        if !is_plain_name(uri) {
            return Err(ApiError::Internal(format!("{key} lists an unexpected URI `{uri}`")));
        }
        let file = format!("{prefix}/{rendition}/{uri}");
        let url = match app.storage.presigned_url(&file).await.map_err(storage_error)? {
            Some(signed) => signed,
            None => app.storage.url(&file),
        };
        urls.insert(uri.to_string(), url);
    }
    let out = playlist::replace_files(&text, |uri| urls[uri].clone());
    Ok(playlist_response(out))
}

pub async fn thumbnail(State(app): State<AppState>, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let (lecture, prefix) = published(&app, &raw).await?;
    if !lecture.has_thumbnail {
        return Err(ApiError::NotFound(format!("lecture `{raw}` has no thumbnail")));
    }
    let key = format!("{prefix}/{THUMBNAIL}");
    let url = match app.storage.presigned_url(&key).await.map_err(storage_error)? {
        Some(signed) => signed,
        None => app.storage.url(&key),
    };
    let mut response = Redirect::temporary(&url).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::is_plain_name;

    #[test]
    fn only_plain_segment_names_are_signed() {
        assert!(is_plain_name("seg_00001.m4s") && is_plain_name("init_2.mp4"));
        assert!(!is_plain_name("../other/seg_00001.m4s"));
        assert!(!is_plain_name("http://169.254.169.254/latest"));
        assert!(!is_plain_name(".hidden"));
    }
}
