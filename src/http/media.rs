//! `/media/...`: published files from local storage, with the Content-Types
//! players need, byte ranges (tower-http's `ServeDir`), CORS for web players
//! on other origins, and cache lifetimes that suit HLS.

use std::path::PathBuf;

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use tower_http::services::ServeDir;

pub fn routes(root: PathBuf) -> Router {
    Router::new().nest_service("/media", ServeDir::new(root)).layer(middleware::from_fn(hls_headers))
}

/// (Content-Type, Cache-Control) by file extension. Playlists change while a
/// job runs and must be refetched; segments never change once published.
fn headers_for(path: &str) -> Option<(&'static str, &'static str)> {
    let ext = path.rsplit_once('.').map(|(_, ext)| ext)?;
    Some(match ext {
        "m3u8" => ("application/vnd.apple.mpegurl", "public, max-age=2"),
        "ts" => ("video/mp2t", "public, max-age=31536000, immutable"),
        "m4s" | "mp4" => ("video/mp4", "public, max-age=31536000, immutable"),
        "jpg" | "jpeg" => ("image/jpeg", "public, max-age=86400"),
        _ => return None,
    })
}

async fn hls_headers(request: Request, next: Next) -> Response {
    let kind = headers_for(request.uri().path());
    let mut response = next.run(request).await;
    if response.status().is_success() {
        let headers = response.headers_mut();
        if let Some((content_type, cache)) = kind {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
        }
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    }
    response
}
