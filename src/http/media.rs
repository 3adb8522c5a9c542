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

async fn hls_headers(request: Request, next: Next) -> Response {
    let kind = crate::publish::object_headers(request.uri().path());
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
