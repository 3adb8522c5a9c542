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
use crate::transcode::previews::{STORYBOARD_IMAGE, STORYBOARD_VTT};

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

/// The file names a stored media playlist references, each to be signed as
/// `<prefix>/<rendition>/<name>`: refused if any is not a plain name inside
/// that directory, or if a tag carries a URI we would pass on unsigned.
fn files_to_sign(text: &str) -> Result<Vec<&str>, String> {
    if let Some(tag) = playlist::foreign_uri_tag(text) {
        return Err(format!("a tag whose URI would not be signed: {tag}"));
    }
    let names = playlist::files(text);
    match names.iter().find(|uri| !is_plain_name(uri)) {
        Some(uri) => Err(format!("an unexpected URI `{uri}`")),
        None => Ok(names),
    }
}

/// `GET /api/lectures/{id}/master.m3u8`: the master playlist, for players
/// (no key), whatever the storage.
#[utoipa::path(get, path = "/api/lectures/{id}/master.m3u8", tag = "playback",
    params(("id" = String, Path, description = "The lecture's id")),
    responses((status = 200, description = "HLS master playlist", content_type = "application/vnd.apple.mpegurl", body = String),
        (status = 404, description = "No such lecture, or nothing playable yet", body = super::error::ErrorBody)))]
pub async fn master(State(app): State<AppState>, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let (_, prefix) = published(&app, &raw).await?;
    let bytes = app.storage.get_bytes(&format!("{prefix}/{MASTER_PLAYLIST}")).await.map_err(storage_error)?;
    // Variant URIs stay relative: from this route they resolve to `media`.
    let text = String::from_utf8(bytes).map_err(|e| ApiError::Internal(format!("master playlist of {raw}: {e}")))?;
    Ok(playlist_response(text))
}

/// `GET /api/lectures/{id}/{rendition}/index.m3u8`: a media playlist whose
/// segments and init sections point at the storage (signed links for a
/// private bucket).
#[utoipa::path(get, path = "/api/lectures/{id}/{rendition}/index.m3u8", tag = "playback",
    params(("id" = String, Path, description = "The lecture's id"),
        ("rendition" = String, Path, description = "A rendition's name, as the master playlist lists it: `720p`")),
    responses((status = 200, description = "HLS media playlist", content_type = "application/vnd.apple.mpegurl", body = String),
        (status = 404, description = "No such lecture or rendition", body = super::error::ErrorBody)))]
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
    let names = files_to_sign(&text).map_err(|e| ApiError::Internal(format!("{key}: {e}")))?;
    let mut urls = HashMap::new();
    for uri in names {
        let file = format!("{prefix}/{rendition}/{uri}");
        let url = match app.storage.presigned_url(&file).await.map_err(storage_error)? {
            Some(signed) => signed,
            None => app.storage.url(&file),
        };
        urls.insert(uri.to_string(), url);
    }
    // Every name `replace_files` hands back is one of `names`: a lookup miss
    // cannot happen, and would leave the name relative rather than panic.
    let out = playlist::replace_files(&text, |uri| urls.get(uri).cloned().unwrap_or_else(|| uri.to_string()));
    Ok(playlist_response(out))
}

/// `GET /api/lectures/{id}/thumbnail.jpg`: a redirect to the thumbnail.
#[utoipa::path(get, path = "/api/lectures/{id}/thumbnail.jpg", tag = "playback",
    params(("id" = String, Path, description = "The lecture's id")),
    responses((status = 307, description = "Redirects to the JPEG (a signed link for a private bucket)",
            headers(("Location" = String, description = "The thumbnail's URL"))),
        (status = 404, description = "No such lecture, or no thumbnail", body = super::error::ErrorBody)))]
pub async fn thumbnail(State(app): State<AppState>, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let (lecture, prefix) = published(&app, &raw).await?;
    if !lecture.has_thumbnail {
        return Err(ApiError::NotFound(format!("lecture `{raw}` has no thumbnail")));
    }
    redirect(&app, &format!("{prefix}/{THUMBNAIL}")).await
}

/// `GET /api/lectures/{id}/storyboard.vtt`: the seek-preview cues, served
/// as stored. Their relative `storyboard.jpg#xywh=…` references resolve to
/// the route below.
#[utoipa::path(get, path = "/api/lectures/{id}/storyboard.vtt", tag = "playback",
    params(("id" = String, Path, description = "The lecture's id")),
    responses((status = 200, description = "WebVTT; each cue names a tile of `storyboard.jpg`", content_type = "text/vtt", body = String),
        (status = 404, description = "No such lecture, or no storyboard", body = super::error::ErrorBody)))]
pub async fn storyboard(State(app): State<AppState>, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let prefix = with_storyboard(&app, &raw).await?;
    let bytes = app.storage.get_bytes(&format!("{prefix}/{STORYBOARD_VTT}")).await.map_err(storage_error)?;
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/vtt; charset=utf-8"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    Ok(response)
}

/// `GET /api/lectures/{id}/storyboard.jpg`: a redirect to the sprite.
#[utoipa::path(get, path = "/api/lectures/{id}/storyboard.jpg", tag = "playback",
    params(("id" = String, Path, description = "The lecture's id")),
    responses((status = 307, description = "Redirects to the sprite (a signed link for a private bucket)",
            headers(("Location" = String, description = "The sprite's URL"))),
        (status = 404, description = "No such lecture, or no storyboard", body = super::error::ErrorBody)))]
pub async fn storyboard_image(State(app): State<AppState>, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let prefix = with_storyboard(&app, &raw).await?;
    redirect(&app, &format!("{prefix}/{STORYBOARD_IMAGE}")).await
}

/// The completed video's prefix, if it has seek previews.
async fn with_storyboard(app: &AppState, raw: &str) -> Result<String, ApiError> {
    let (lecture, prefix) = published(app, raw).await?;
    match lecture.published_prefix {
        Some(_) if lecture.has_storyboard => Ok(prefix),
        _ => Err(ApiError::NotFound(format!("lecture `{raw}` has no storyboard"))),
    }
}

/// A temporary redirect to the object at `key`, signed when storage is
/// private.
async fn redirect(app: &AppState, key: &str) -> Result<Response, ApiError> {
    let url = match app.storage.presigned_url(key).await.map_err(storage_error)? {
        Some(signed) => signed,
        None => app.storage.url(key),
    };
    let mut response = Redirect::temporary(&url).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Lines a stored playlist could hold, honest or planted.
    fn line() -> impl Strategy<Value = String> {
        let uri = prop_oneof![
            "seg_[0-9]{5}\\.m4s",
            Just("init_2.mp4".to_string()),
            Just("../other-lecture/seg_00001.m4s".to_string()),
            Just("/etc/passwd".to_string()),
            Just("http://169.254.169.254/latest/meta-data".to_string()),
            Just("%2e%2e/seg.m4s".to_string()),
            Just("sub/seg.m4s".to_string()),
            Just(".hidden".to_string()),
            "[ -~]{0,12}",
        ];
        prop_oneof![
            uri.clone(),
            uri.clone().prop_map(|u| format!("#EXT-X-MAP:URI=\"{u}\"")),
            uri.clone().prop_map(|u| format!("#EXT-X-MAP:BYTERANGE=\"1@0\",URI=\"{u}\"")),
            uri.clone().prop_map(|u| format!("#EXT-X-KEY:METHOD=AES-128,URI=\"{u}\"")),
            uri.clone().prop_map(|u| format!("#EXT-X-MAP:URI=\"init_1.mp4\",URI=\"{u}\"")),
            uri.prop_map(|u| format!("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{u}\"")),
            Just("#EXTINF:6.000000,".to_string()),
            Just("#EXT-X-TARGETDURATION:6".to_string()),
            Just(String::new()),
        ]
    }

    proptest! {
        /// Whatever a stored playlist holds, what gets signed is a plain
        /// name inside the rendition's directory, and no URI of the
        /// playlist reaches the player unsigned.
        #[test]
        fn the_rewriter_never_signs_or_passes_a_uri_outside_the_lecture(lines in proptest::collection::vec(line(), 0..30)) {
            let text = format!("#EXTM3U\n{}\n", lines.join("\n"));
            if let Ok(names) = files_to_sign(&text) {
                let prefix = "0123456789abcdef0123456789abcdef/tag/240p";
                for name in &names {
                    let key = format!("{prefix}/{name}");
                    prop_assert!(!name.contains('/') && !name.contains("..") && !name.contains(':'), "{}", name);
                    prop_assert!(key.starts_with(prefix) && key.matches('/').count() == 3, "{}", key);
                }
                let out = playlist::replace_files(&text, |uri| format!("https://signed.example/{prefix}/{uri}?sig=1"));
                for line in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
                    if line.starts_with('#') {
                        for (at, _) in line.match_indices("URI=\"") {
                            prop_assert!(line[at + 5..].starts_with("https://signed.example/"), "{}", line);
                        }
                    } else {
                        prop_assert!(line.starts_with("https://signed.example/"), "{}", line);
                    }
                }
            }
        }
    }

    #[test]
    fn only_plain_segment_names_are_signed() {
        assert!(is_plain_name("seg_00001.m4s") && is_plain_name("init_2.mp4"));
        assert!(!is_plain_name("../other/seg_00001.m4s"));
        assert!(!is_plain_name("http://169.254.169.254/latest"));
        assert!(!is_plain_name(".hidden"));
    }
}

/// What a viewer of a lecture may see, with no key: what playback already
/// gives away (the id opens the video) plus its title, course and status.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Viewing {
    #[serde(rename = "_id")]
    pub id: String,
    pub course_id: String,
    pub name_of_topic: String,
    pub processing_status: crate::domain::ProcessingStatus,
    #[schema(maximum = 100)]
    pub progress: u32,
    pub playable: bool,
    /// Why it failed, in the words the uploader got (no server details).
    pub processing_error: Option<String>,
    pub video_link: Option<String>,
    pub thumbnail_link: Option<String>,
    pub duration_seconds: Option<f64>,
}

/// `GET /api/lectures/{id}/viewing`: for the watch page and players.
#[utoipa::path(get, path = "/api/lectures/{id}/viewing", tag = "playback",
    params(("id" = String, Path, description = "The lecture's id")),
    responses((status = 200, body = Viewing), (status = 404, body = super::error::ErrorBody)))]
pub async fn viewing(State(app): State<AppState>, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id(&raw)?;
    let lecture =
        app.lectures.get(&id).await?.ok_or_else(|| ApiError::NotFound(format!("no lecture with id `{raw}`")))?;
    let job = app.queue.get(id.as_str()).await?;
    let doc = crate::status::LectureDocument::new(lecture, job.as_ref(), app.storage.as_ref());
    let viewing = Viewing {
        id: doc.id,
        course_id: doc.course_id,
        name_of_topic: doc.name_of_topic,
        processing_status: doc.processing_status,
        progress: doc.progress,
        playable: doc.playable,
        processing_error: doc.processing_error,
        video_link: doc.video_link,
        thumbnail_link: doc.thumbnail_link,
        duration_seconds: doc.duration_seconds,
    };
    let mut response = axum::Json(viewing).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
