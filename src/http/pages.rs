//! The pages vidpipe serves itself: upload (`/`), watch (`/watch/{id}`) and
//! the queue dashboard (`/admin`), plain HTML and JavaScript from `web/`,
//! compiled into the binary. No build step, no framework, nothing fetched.
//!
//! Every page runs under a Content-Security-Policy that allows scripts from
//! this origin only (no inline script), so text a user typed can never run
//! even if a page bug put it in the DOM as HTML; the scripts themselves only
//! ever set `textContent`. The pages hold no key of their own: the upload
//! page uploads to a one-time URL handed in its fragment, or with a key the
//! person types, kept in the tab's `sessionStorage`, as the dashboard does.

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::AppState;

/// Scripts and styles from here only; media, images and playlists may come
/// from the storage's origin (a bucket or CDN), which is not known here.
const PAGE_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' https: http: \
                           data:; media-src 'self' https: http: blob:; connect-src 'self' https: http:; \
                           worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; \
                           frame-ancestors 'none'";

/// `(name, content type, bytes)` under `/assets/`.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("app.css", "text/css; charset=utf-8", include_bytes!("../../web/app.css")),
    ("common.js", "text/javascript; charset=utf-8", include_bytes!("../../web/common.js")),
    ("lecture.js", "text/javascript; charset=utf-8", include_bytes!("../../web/lecture.js")),
    ("upload.js", "text/javascript; charset=utf-8", include_bytes!("../../web/upload.js")),
    ("watch.js", "text/javascript; charset=utf-8", include_bytes!("../../web/watch.js")),
    ("admin.js", "text/javascript; charset=utf-8", include_bytes!("../../web/admin.js")),
    ("vendor/hls-1.7.4.min.js", "text/javascript; charset=utf-8", include_bytes!("../../web/vendor/hls-1.7.4.min.js")),
    ("vendor/tus-4.3.1.min.js", "text/javascript; charset=utf-8", include_bytes!("../../web/vendor/tus-4.3.1.min.js")),
];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { page(include_str!("../../web/upload.html")) }))
        .route("/watch/{id}", get(|| async { page(include_str!("../../web/watch.html")) }))
        .route("/admin", get(|| async { page(include_str!("../../web/admin.html")) }))
        .route("/assets/{*name}", get(asset))
        // Browsers ask for it on every page; there is none.
        .route("/favicon.ico", get(|| async { axum::http::StatusCode::NO_CONTENT }))
}

fn page(html: &'static str) -> Response {
    let mut response = axum::response::Html(html).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_POLICY));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, bytes)) => {
            // Vendored files carry their version in their name; ours change
            // with the binary, so they are revalidated.
            let cache = if name.starts_with("vendor/") { "public, max-age=31536000, immutable" } else { "no-cache" };
            ([(header::CONTENT_TYPE, *content_type), (header::CACHE_CONTROL, cache)], *bytes).into_response()
        }
        None => super::ApiError::NotFound(format!("no asset `{name}`")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    /// The vendored files are the ones `web/vendor/SHA256SUMS` pins.
    #[test]
    fn vendored_files_match_their_checksums() {
        let sums = include_str!("../../web/vendor/SHA256SUMS");
        let mut checked = 0;
        for line in sums.lines().filter(|l| !l.trim().is_empty()) {
            let (sum, name) = line.split_once("  ").unwrap();
            let (_, _, bytes) = super::ASSETS
                .iter()
                .find(|(n, _, _)| *n == format!("vendor/{name}"))
                .unwrap_or_else(|| panic!("{name} is pinned but not served"));
            let digest: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(digest, sum, "web/vendor/{name} is not the file SHA256SUMS pins");
            checked += 1;
        }
        let served = super::ASSETS.iter().filter(|(n, _, _)| n.starts_with("vendor/")).count();
        assert_eq!(checked, served, "every vendored file is pinned");
    }
}
