//! Who may call what: the `Host` allowlist, the cross-site check, CORS and
//! API keys with scopes.
//!
//! Three checks run in this order on every request:
//! 1. [`check_host_and_origin`]: a `Host` that is not ours is refused (DNS
//!    rebinding: a page on evil.example whose name now resolves to 127.0.0.1
//!    still sends `Host: evil.example`), and so is a state-changing request
//!    sent by a browser from another site (a cross-site form POST carries an
//!    `Origin` or `Sec-Fetch-Site: cross-site`) unless CORS allows that origin.
//! 2. CORS (tower-http), only for the configured origins.
//! 3. [`authorize`], per route group: a bearer key with enough scope. Keys are
//!    looked up in the database on every request, so a revocation is seen at
//!    once by every API process.
//!
//! Playback (`/media`, the signed playback routes, thumbnails) and the
//! liveness probe carry no key: players cannot send one.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::{ApiError, AppState};
use crate::config::Access;
use crate::keys::Scope;

/// How requests are authenticated, decided once at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// `--no-auth`: every caller is an admin.
    Open,
    /// On a loopback address: open while no key exists, keyed from the
    /// moment one is created.
    KeysOnceCreated,
    /// On any other address: a key is always needed.
    KeysRequired,
}

/// Who is calling, as [`authorize`] established it. Handlers of keyed
/// routes read it from the request's extensions.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's name; `None` when the API is open.
    pub key: Option<String>,
    pub scope: Scope,
    pub address: Option<IpAddr>,
    pub admission: Admission,
}

/// Why the caller was let in, kept so that a response that outlives its
/// request (an event stream) can ask again whether a new request would be:
/// see [`Caller::still_admitted`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// `--no-auth`: always.
    Open,
    /// No key existed yet: until the first one is created.
    NoKeysYet,
    /// A key, by its digest: until it is revoked.
    Key { secret_hash: String },
    /// A direct-upload URL, checked by each request to it (none is a stream).
    UploadUrl,
}

impl Caller {
    /// Whether this caller would still be let in. A database error counts
    /// as no: the stream ends, and the client's reconnection is authorized
    /// afresh.
    pub async fn still_admitted(&self, app: &AppState) -> bool {
        match &self.admission {
            Admission::Open | Admission::UploadUrl => true,
            Admission::NoKeysYet => matches!(app.keys.any().await, Ok(false)),
            Admission::Key { secret_hash } => matches!(app.keys.exists(secret_hash).await, Ok(true)),
        }
    }

    /// What upload rate limits count by: the key, or the client address.
    pub fn identity(&self) -> String {
        match (&self.key, self.address) {
            (Some(key), _) => format!("key:{key}"),
            (None, Some(ip)) => format!("ip:{ip}"),
            (None, None) => "unknown".to_string(),
        }
    }
}

/// The host and origin rules, resolved once the listen address is known.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    pub auth: AuthMode,
    any_host: bool,
    hosts: HashSet<String>,
    cors_origins: Vec<String>,
    trust_forwarded_for: bool,
}

/// Headers a tus client sends, and those it must read from answers.
const TUS_REQUEST_HEADERS: [&str; 5] =
    ["tus-resumable", "upload-length", "upload-metadata", "upload-offset", "upload-defer-length"];
const TUS_ANSWER_HEADERS: [&str; 9] = [
    "tus-resumable",
    "tus-version",
    "tus-extension",
    "tus-max-size",
    "upload-offset",
    "upload-length",
    "upload-expires",
    "upload-metadata",
    "vidpipe-lecture-id",
];

impl AccessPolicy {
    /// Without configured hosts: the listen address, the loopback names and
    /// the public base URL's host.
    pub fn new(access: &Access, auth: AuthMode, listen: SocketAddr, public_base_url: &str) -> AccessPolicy {
        let mut hosts: HashSet<String> = access.allowed_hosts.iter().cloned().collect();
        if hosts.is_empty() {
            hosts.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
            if !listen.ip().is_unspecified() {
                hosts.insert(listen.ip().to_string());
            }
            if let Some(host) = url_host(public_base_url) {
                hosts.insert(host);
            }
        }
        AccessPolicy {
            auth,
            any_host: access.any_host,
            hosts,
            cors_origins: access.cors_origins.clone(),
            trust_forwarded_for: access.trust_forwarded_for,
        }
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.any_host || self.hosts.contains(host)
    }

    /// CORS for the API, or `None` when no origin is configured (the
    /// default: browsers on other origins cannot read API answers).
    /// CORS for the pages of `VIDPIPE_CORS_ORIGINS`, or none.
    pub fn cors(&self) -> Option<CorsLayer> {
        if self.cors_origins.is_empty() {
            return None;
        }
        let origins: Vec<HeaderValue> = self.cors_origins.iter().filter_map(|o| o.parse().ok()).collect();
        Some(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                // PATCH, the `Tus-*`/`Upload-*` headers and `Vidpipe-Lecture-Id`:
                // what a tus client in a page needs (`http/uploads.rs`).
                .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::HEAD, Method::PATCH])
                .allow_headers(
                    [header::AUTHORIZATION, header::CONTENT_TYPE]
                        .into_iter()
                        .chain(TUS_REQUEST_HEADERS.map(HeaderName::from_static))
                        .collect::<Vec<_>>(),
                )
                .expose_headers(
                    [header::LOCATION, header::RETRY_AFTER]
                        .into_iter()
                        .chain(TUS_ANSWER_HEADERS.map(HeaderName::from_static))
                        .collect::<Vec<_>>(),
                )
                .max_age(std::time::Duration::from_secs(600)),
        )
    }

    /// The client's address: the peer, or behind a trusted proxy the last
    /// `X-Forwarded-For` entry (the one that proxy appended).
    pub fn client_address(&self, request: &Request) -> Option<IpAddr> {
        if self.trust_forwarded_for {
            // Only the last entry is the proxy's; one it cannot parse does
            // not make an earlier (client-written) one count.
            let last = request
                .headers()
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .next_back()
                .and_then(|ip| ip.trim().parse::<IpAddr>().ok());
            if last.is_some() {
                return last;
            }
        }
        super::server::remote_addr(request.extensions()).map(|a| a.ip())
    }
}

/// True when `url` names a host other than this machine (`localhost` or a
/// loopback address): the API is reachable from elsewhere through it.
pub fn names_another_host(url: &str) -> bool {
    match url_host(url) {
        None => false,
        Some(host) => host != "localhost" && !host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()),
    }
}

/// The host part of a URL, lower case, without port or brackets.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    Some(host_name(authority)).filter(|h| !h.is_empty())
}

/// `Example.com:8080` → `example.com`; `[::1]:8080` → `::1`.
fn host_name(authority: &str) -> String {
    let authority = authority.trim();
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(authority, |(h, _)| h)
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Refuses foreign `Host` headers and cross-site state changes (see the
/// module docs).
pub async fn check_host_and_origin(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let policy = &app.access;
    let authority = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    let Some(authority) = authority else {
        return refuse(request, ApiError::BadRequest("the request has no Host header".into())).await;
    };
    let host = host_name(&authority);
    if !policy.host_allowed(&host) {
        tracing::warn!(host = %host, "request for a host we do not serve refused");
        let message =
            format!("this server does not answer to host `{host}`; its operator can add it to VIDPIPE_ALLOWED_HOSTS");
        return refuse(request, ApiError::BadRequest(message)).await;
    }
    if !is_safe(request.method()) {
        if let Some(refusal) = cross_site_refusal(policy, request.headers(), &authority) {
            return refuse(request, refusal).await;
        }
    }
    next.run(request).await
}

/// Answers `error` to a request whose body was not read (see `discard_body`).
async fn refuse(request: Request, error: ApiError) -> Response {
    super::discard_body(request.into_body()).await;
    error.into_response()
}

/// A state-changing request from a page on another site, which the CORS
/// configuration does not allow.
fn cross_site_refusal(policy: &AccessPolicy, headers: &HeaderMap, authority: &str) -> Option<ApiError> {
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()).map(|o| o.to_ascii_lowercase());
    let allowed = |origin: &str| {
        policy.cors_origins.iter().any(|o| o == origin)
            || origin.split_once("://").is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(authority))
    };
    let refuse = || {
        Some(ApiError::Forbidden(
            "cross-site requests may not change anything; call the API from a server, or have the operator add your \
             origin to VIDPIPE_CORS_ORIGINS"
                .into(),
        ))
    };
    match origin.as_deref() {
        Some(o) if !allowed(o) => return refuse(),
        Some(_) => return None,
        None => {}
    }
    let site = headers.get("sec-fetch-site").and_then(|s| s.to_str().ok()).unwrap_or("none");
    if matches!(site, "cross-site" | "same-site") {
        return refuse();
    }
    None
}

/// Route-group middleware: the caller needs a key of at least `needed`
/// scope (or the API is open). Adds [`Caller`] to the request.
pub async fn authorize(State((app, needed)): State<(AppState, Scope)>, request: Request, next: Next) -> Response {
    let address = app.access.client_address(&request);
    let bearer = request.headers().get(header::AUTHORIZATION).map(|v| {
        v.to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(|v| v.trim().to_string())
    });
    match caller(&app, needed, bearer, address).await {
        Ok(caller) => {
            let mut request = request;
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(refusal) => refuse(request, refusal).await,
    }
}

/// The caller, if it may do what needs `needed`. `bearer`: the
/// Authorization header, if any, and the key in it, if it is a bearer one.
async fn caller(
    app: &AppState,
    needed: Scope,
    bearer: Option<Option<String>>,
    address: Option<IpAddr>,
) -> Result<Caller, ApiError> {
    let caller =
        match (app.access.auth, bearer) {
            (AuthMode::Open, _) => Caller { key: None, scope: Scope::Admin, address, admission: Admission::Open },
            (AuthMode::KeysOnceCreated, None) if !app.keys.any().await.map_err(internal)? => {
                Caller { key: None, scope: Scope::Admin, address, admission: Admission::NoKeysYet }
            }
            (_, None) => return Err(ApiError::Unauthorized(
                "an API key is needed: send `Authorization: Bearer <key>` (the operator creates keys with `vidpipe \
                 keys create`)"
                    .into(),
            )),
            (_, Some(None)) => {
                return Err(ApiError::Unauthorized("the Authorization header must be `Bearer <key>`".into()));
            }
            (_, Some(Some(secret))) => match app.keys.authenticate(&secret).await.map_err(internal)? {
                Some(holder) => Caller {
                    key: Some(holder.name),
                    scope: holder.scope,
                    address,
                    admission: Admission::Key { secret_hash: holder.secret_hash },
                },
                None => return Err(ApiError::Unauthorized("this API key is unknown or was revoked".into())),
            },
        };
    if caller.scope < needed {
        return Err(ApiError::Forbidden(format!(
            "this action needs a key with the `{needed}` scope; this key has `{}`",
            caller.scope
        )));
    }
    Ok(caller)
}

fn internal(e: crate::keys::KeyError) -> ApiError {
    ApiError::Internal(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hosts: &[&str], cors: &[&str]) -> AccessPolicy {
        let access = Access {
            allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            cors_origins: cors.iter().map(|h| h.to_string()).collect(),
            ..Access::default()
        };
        AccessPolicy::new(&access, AuthMode::KeysRequired, "0.0.0.0:8080".parse().unwrap(), "https://video.example.com")
    }

    #[test]
    fn hosts_are_compared_without_port_or_case() {
        assert_eq!(host_name("Example.COM:8080"), "example.com");
        assert_eq!(host_name("[::1]:8080"), "::1");
        assert_eq!(host_name("example.com."), "example.com");
        assert_eq!(url_host("https://user@Video.example.com:443/x").as_deref(), Some("video.example.com"));
        let defaults = policy(&[], &[]);
        assert!(defaults.host_allowed("localhost") && defaults.host_allowed("video.example.com"));
        assert!(!defaults.host_allowed("0.0.0.0") && !defaults.host_allowed("evil.example"));
        assert!(names_another_host("https://video.example.com") && !names_another_host("http://127.0.0.1:8080"));
        assert!(!names_another_host("http://localhost:8080") && !names_another_host("http://[::1]:8080"));
        let configured = policy(&["api.example.com"], &[]);
        assert!(configured.host_allowed("api.example.com") && !configured.host_allowed("localhost"));
    }

    #[test]
    fn cross_site_state_changes_are_refused_unless_cors_allows_the_origin() {
        let p = policy(&[], &["https://app.example.com"]);
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().unwrap());
            }
            h
        };
        let host = "127.0.0.1:8080";
        assert!(cross_site_refusal(&p, &headers(&[("origin", "https://evil.example")]), host).is_some());
        assert!(cross_site_refusal(&p, &headers(&[("origin", "null")]), host).is_some());
        assert!(cross_site_refusal(&p, &headers(&[("sec-fetch-site", "cross-site")]), host).is_some());
        assert!(cross_site_refusal(&p, &headers(&[("origin", "https://app.example.com")]), host).is_none());
        assert!(cross_site_refusal(&p, &headers(&[("origin", "http://127.0.0.1:8080")]), host).is_none());
        assert!(cross_site_refusal(&p, &headers(&[]), host).is_none(), "curl and servers send neither");
    }
}
