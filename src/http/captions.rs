//! `POST /api/lectures/{id}/captions`: add a caption language to a lecture,
//! or replace one, at any time.
//!
//! The file is checked whole (it is small) before anything is stored. A
//! lecture still processing gets the track with its video; a published one
//! gets it at once, the master playlist naming it before the answer goes
//! out (`publish::captions` explains why concurrent calls cannot lose one).

use axum::extract::multipart::{Multipart, MultipartError, MultipartRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::lectures::parse_id;
use super::{ApiError, AppState};
use crate::captions::{Captions, MAX_CAPTION_BYTES};
use crate::ingest::{CAPTIONS_FIELD, CAPTIONS_LANGUAGE_FIELD};
use crate::publish::captions::refresh;
use crate::transcode::command::MEDIA_PLAYLIST;
use crate::transcode::playlist::captions_dir;

/// Room for the form's framing and the language field around the file.
pub const BODY_LIMIT: usize = MAX_CAPTION_BYTES + 64 * 1024;

/// The form: a WebVTT or SRT file and its language.
#[derive(ToSchema)]
#[allow(dead_code)] // Only documents the form.
#[serde(rename_all = "camelCase")]
pub struct CaptionsForm {
    /// WebVTT or SRT, UTF-8, at most 1 MiB.
    #[schema(value_type = String, format = Binary, content_media_type = "text/vtt")]
    captions: Vec<u8>,
    /// A BCP 47 tag whose language is an ISO 639 code: `en`, `pt-BR`.
    #[schema(max_length = 35, pattern = "^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8}){0,3}$")]
    captions_language: String,
}

/// The stored track.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaptionsStored {
    /// The canonical tag: `EN` and `eng` become `en`.
    pub language: String,
    pub label: String,
    /// Its subtitles playlist, once the lecture's video is published;
    /// until then `null`, and the track is published with the video.
    pub link: Option<String>,
}

fn form_error(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(format!("the captions file is larger than the limit of {MAX_CAPTION_BYTES} bytes"))
    } else {
        ApiError::BadRequest(format!("malformed form: {}", e.body_text()))
    }
}

/// `POST /api/lectures/{id}/captions`.
#[utoipa::path(post, path = "/api/lectures/{id}/captions", tag = "lectures",
    params(("id" = String, Path, description = "The lecture's id")),
    request_body(content = CaptionsForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "A new language", body = CaptionsStored),
        (status = 200, description = "The language's track was replaced", body = CaptionsStored),
        (status = 400, description = "A field is missing, or the language tag is unknown", body = ErrorBody),
        (status = 404, description = "No such lecture", body = ErrorBody),
        (status = 409, description = "The lecture has the most languages it may have", body = ErrorBody),
        (status = 413, description = "The file is larger than 1 MiB", body = ErrorBody),
        (status = 422, description = "Not valid WebVTT or SRT; the message names the line", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn put(
    State(app): State<AppState>,
    Path(raw): Path<String>,
    form: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<CaptionsStored>), ApiError> {
    let id = parse_id(&raw)?;
    let not_found = || ApiError::NotFound(format!("no lecture with id `{raw}`"));
    app.lectures.get(&id).await?.ok_or_else(not_found)?;
    let mut form = form.map_err(|e| {
        ApiError::BadRequest(format!(
            "send the file as multipart/form-data (`curl -F {CAPTIONS_FIELD}=@en.vtt -F {CAPTIONS_LANGUAGE_FIELD}=en`): {}",
            e.body_text()
        ))
    })?;
    let (mut file, mut language) = (None, None);
    while let Some(field) = form.next_field().await.map_err(form_error)? {
        match field.name() {
            Some(CAPTIONS_FIELD) => file = Some(field.bytes().await.map_err(form_error)?),
            Some(CAPTIONS_LANGUAGE_FIELD) => language = Some(field.text().await.map_err(form_error)?),
            _ => {}
        }
    }
    let file = file.ok_or_else(|| ApiError::BadRequest(format!("missing field `{CAPTIONS_FIELD}`")))?;
    let language =
        language.ok_or_else(|| ApiError::BadRequest(format!("missing field `{CAPTIONS_LANGUAGE_FIELD}`")))?;
    let captions = Captions::from_file(&language, &file)?;
    let store = app.lectures.captions();
    let created = store.put(id.as_str(), &captions).await?;
    // Read after storing: a video published from here on publishes the track
    // itself (the worker reads the tracks after completing).
    let lecture = app.lectures.get(&id).await?.ok_or_else(not_found)?;
    let tag = captions.language.tag().to_string();
    let link = match (&lecture.published_prefix, lecture.renditions.first()) {
        (Some(prefix), Some(rendition)) => {
            refresh(&store, &app.storage, id.as_str(), prefix, &rendition.name, true).await.map_err(|e| {
                ApiError::Internal(format!("the captions are stored but could not be published ({e}); send them again"))
            })?;
            Some(app.storage.url(&format!("{prefix}/{}/{MEDIA_PLAYLIST}", captions_dir(&tag))))
        }
        _ => None,
    };
    tracing::info!(lecture = %id, language = %tag, created, "captions stored");
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(CaptionsStored { language: tag, label: captions.language.label().to_string(), link })))
}
