//! The OpenAPI 3.1 document, served at `/api/openapi.json`.
//!
//! It is generated from the handlers' `#[utoipa::path]` attributes and the
//! answer types themselves, so it cannot drift from what the code sends;
//! `tests/e2e/openapi.rs` checks that every route of the router is in it,
//! and CI fuzzes a live server against it with schemathesis.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::{captions, direct, events, jobs, lectures, ops, playback, upload, uploads};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "vidpipe",
        description = "Upload a video, get an HLS ladder. Keys go in `Authorization: Bearer <key>`; \
            `upload` keys may upload and read, `admin` keys may do everything. Playback, \
            `/api/health` and this document need no key.",
        license(name = "MIT"),
    ),
    paths(
        upload::upload,
        uploads::options,
        uploads::create,
        uploads::head,
        uploads::patch,
        uploads::terminate,
        direct::create,
        direct::get,
        direct::start,
        direct::head,
        direct::patch,
        direct::terminate,
        lectures::list,
        lectures::get,
        lectures::delete,
        captions::put,
        jobs::list,
        jobs::get,
        jobs::retry,
        jobs::cancel,
        jobs::pause,
        jobs::resume,
        jobs::retry_failed,
        jobs::clean,
        events::lecture,
        events::all,
        playback::master,
        playback::media,
        playback::thumbnail,
        playback::storyboard,
        playback::storyboard_image,
        playback::viewing,
        ops::liveness,
        ops::health,
        ops::api_metrics,
        ops::prometheus,
        media_file,
        document,
    ),
    components(schemas(events::EventMessage)),
    modifiers(&BearerKeys),
    tags(
        (name = "lectures", description = "Upload, read and delete lectures"),
        (name = "uploads", description = "Resumable uploads (tus 1.0), and one-time upload URLs for browsers"),
        (name = "jobs", description = "The transcoding queue"),
        (name = "events", description = "Server-sent events"),
        (name = "playback", description = "For players: no key"),
        (name = "operations", description = "Health and metrics"),
    )
)]
pub struct ApiDoc;

/// The `bearer` scheme the routes' `security` names, and the answers every
/// keyed route can give: 401 without a valid key, 403 with a key of the
/// wrong scope (or a cross-site request).
struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("An API key: `vp_...`"));
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme.build()));
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content("application/json", Content::new(Some(Ref::from_schema_name("ErrorBody"))))
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.post, &mut item.delete, &mut item.head, &mut item.patch];
            for operation in operations.into_iter().flatten().filter(|o| o.security.is_some()) {
                let responses = &mut operation.responses.responses;
                responses.insert("401".into(), error("No key, or a key that is unknown or revoked").into());
                responses
                    .insert("403".into(), error("The key's scope does not allow this, or a cross-site request").into());
            }
        }
    }
}

/// `GET /api/openapi.json`: this document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Documents `/media/{path}`, served by `http::media` (a `ServeDir`) when
/// the storage is the local disk; never called.
#[utoipa::path(get, path = "/media/{path}", tag = "playback",
    params(("path" = String, Path, description = "`<lecture id>/<attempt>/...`: a published file, as playlists name it")),
    responses((status = 200, description = "A published file: playlist, fMP4 segment or init section, or JPEG",
            content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "Part of a file (`Range`)", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, description = "No such file")))]
#[allow(dead_code)]
async fn media_file() {}
