//! Storage in any S3-compatible object store (AWS S3, MinIO, Ceph, R2, GCS
//! interop), through the `object_store` crate.
//!
//! The system we replace uploaded each file once, one at a time, after the
//! encode, and a single "MinIO upload timeout" left a video stuck in
//! "processing". Here:
//! - every request is retried with backoff by `object_store`, and every file
//!   is retried as a whole on top of that (a multipart upload that lost a
//!   part starts over), until the retry budget is spent; the transcode is
//!   never redone for a failed upload. Past the budget the error names the
//!   endpoint, the key and the last error, and the job is retried later;
//! - files larger than [`S3Config::multipart_threshold`] go up in parts, so a
//!   large object is never held in memory whole;
//! - every object gets its `Content-Type` and `Cache-Control` (see
//!   [`super::object_headers`]), since S3 serves what it was given;
//! - requests are path-style unless asked otherwise, because MinIO and most
//!   self-hosted stores do not resolve `<bucket>.<host>` names.
//!
//! Links: by default `videoLink` is `<public base>/<object path>`, where the
//! public base is `VIDPIPE_PUBLIC_BASE_URL` (a CDN or the bucket's public
//! URL) or else the bucket's own URL. With a signed-URL TTL the bucket stays
//! private: links point at the API's playback routes (`http/playback.rs`),
//! which serve the stored playlists with every segment rewritten to a
//! presigned URL.

use std::fmt;
use std::path::Path as LocalPath;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::http::HeaderValue;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsAuthorizer};
use object_store::client::{HttpRequest, HttpRequestBody};
use object_store::path::Path;
use object_store::signer::{Method, Signer};
use object_store::{
    Attribute, Attributes, BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions,
    PutPayload, RetryConfig, WriteMultipart,
};
use tokio::io::AsyncReadExt;

use super::{object_headers, Storage, StorageError};

/// Size of each part of a multipart upload. S3 requires at least 5 MiB for
/// every part but the last.
const PART_SIZE: usize = 8 << 20;
/// Parts of one file in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// Longest wait between two whole-file attempts; short, so that a store that
/// comes back is used again within seconds.
const MAX_FILE_BACKOFF: Duration = Duration::from_secs(2);

/// Where and how to reach the store. Built and validated by `config`.
#[derive(Clone)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/`; may be empty.
    pub prefix: String,
    /// `AWS_ENDPOINT_URL`; `None` means AWS itself.
    pub endpoint: Option<String>,
    pub region: String,
    /// `None`: credentials come from the environment or instance metadata.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// `<bucket>.<host>` requests instead of `<host>/<bucket>`.
    pub virtual_hosted_style: bool,
    /// Base of unsigned links (a CDN or the bucket's public URL), no trailing `/`.
    pub public_base_url: Option<String>,
    /// Serve private objects through presigned URLs valid this long.
    pub signed_url_ttl: Option<Duration>,
    pub upload_concurrency: usize,
    /// How long one file may keep failing before publishing gives up.
    pub retry_budget: Duration,
    /// Files larger than this are uploaded in parts.
    pub multipart_threshold: u64,
    /// `VIDPIPE_S3_CORS_ORIGINS`: origins to allow on the bucket with a
    /// CORS rule put at start-up; empty: leave the bucket's CORS alone.
    pub cors_origins: Vec<String>,
    /// `VIDPIPE_S3_PUBLIC_ENDPOINT`: the endpoint as viewers reach it, for
    /// links; `None`: `endpoint`.
    pub public_endpoint: Option<String>,
}

impl fmt::Debug for S3Config {
    // By hand, so the secret key never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .field("public_base_url", &self.public_base_url)
            .field("signed_url_ttl", &self.signed_url_ttl)
            .field("upload_concurrency", &self.upload_concurrency)
            .field("retry_budget", &self.retry_budget)
            .field("multipart_threshold", &self.multipart_threshold)
            .finish()
    }
}

impl S3Config {
    pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 16 << 20;

    /// The endpoint as people know it, for messages.
    pub fn endpoint_display(&self) -> String {
        match &self.endpoint {
            Some(e) => e.trim_end_matches('/').to_string(),
            None => format!("https://s3.{}.amazonaws.com", self.region),
        }
    }
}

/// How `videoLink` and the other links are made.
#[derive(Debug, Clone)]
enum Links {
    /// `<base>/<object path>`: a public bucket or a CDN in front of it.
    Public(String),
    /// Through the API's playback routes (`<api>/api/lectures/<id>/...`),
    /// which sign every object URL for `ttl`.
    Signed { api_base: String, ttl: Duration },
}

#[derive(Debug, Clone)]
pub struct S3Storage {
    store: Arc<AmazonS3>,
    /// Same store with few, short retries: the start-up check must answer
    /// in seconds, not after the publishing retry budget.
    probe: Arc<AmazonS3>,
    /// Forms presigned URLs for the address viewers use
    /// (`public_endpoint`); the store itself without one.
    signer: Arc<AmazonS3>,
    config: Arc<S3Config>,
    links: Links,
}

/// What went wrong with one call to the store, and whether to try again.
enum Failure {
    Store(object_store::Error),
    Local(std::io::Error),
}

impl Failure {
    /// Retrying cannot fix refused credentials, a missing bucket or a local
    /// file that cannot be read; it can fix everything network-shaped.
    fn is_permanent(&self) -> bool {
        use object_store::Error as E;
        match self {
            Failure::Local(_) => true,
            Failure::Store(
                E::PermissionDenied { .. }
                | E::Unauthenticated { .. }
                | E::NotFound { .. }
                | E::InvalidPath { .. }
                | E::NotSupported { .. }
                | E::NotImplemented { .. },
            ) => true,
            // Listing wraps every HTTP failure as `Generic`; the status is
            // only in the message. A 4xx other than 408/429 is an answer.
            Failure::Store(e) => {
                matches!(http_status(&e.to_string()), Some(status) if (400..500).contains(&status) && status != 408 && status != 429)
            }
        }
    }

    fn is_refusal(&self) -> bool {
        match self {
            Failure::Store(
                object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. },
            ) => true,
            Failure::Store(e) => matches!(http_status(&e.to_string()), Some(401 | 403)),
            Failure::Local(_) => false,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Store(e) => write!(f, "{}", describe(e)),
            Failure::Local(e) => write!(f, "reading the local file: {e}"),
        }
    }
}

/// The status in object_store's "non-2xx status code: 403 Forbidden": the
/// one place an error is read from its text. object_store gives typed kinds
/// (`PermissionDenied`, `NotFound`...) for the calls that map statuses, and
/// `is_permanent` matches those first; but listing and multipart wrap every
/// HTTP failure as `Generic`, whose source (`client::retry::RetryError`, with
/// a `status()`) is private to object_store 0.14, so the text is all there is.
fn http_status(message: &str) -> Option<u16> {
    let start = message.find("status code: ")? + "status code: ".len();
    message[start..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// One line that a person can act on: the S3 error code and message when
/// the server answered, else the request and its root cause (which
/// object_store's own message leaves out, e.g. "Connection refused").
fn describe(e: &object_store::Error) -> String {
    let text = e.to_string();
    if let (Some(status), Some(code)) = (http_status(&text), s3_code(&text)) {
        let detail = xml_field(&text, "Message").map(|m| format!(": {m}")).unwrap_or_default();
        return format!("HTTP {status} {code}{detail}");
    }
    let mut root: &dyn std::error::Error = e;
    while let Some(source) = root.source() {
        root = source;
    }
    let root = root.to_string();
    if text.contains(&root) {
        one_line(&text)
    } else {
        one_line(&format!("{text}: {root}"))
    }
}

impl From<object_store::Error> for Failure {
    fn from(e: object_store::Error) -> Self {
        Failure::Store(e)
    }
}

/// S3 error bodies are XML over several lines; a job error is one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The bucket's own URL at `endpoint` (`None`: AWS), as path-style or
/// virtual-hosted requests address it.
fn bucket_url(config: &S3Config, endpoint: Option<&str>) -> String {
    match (endpoint, config.virtual_hosted_style) {
        (Some(endpoint), false) => format!("{}/{}", endpoint.trim_end_matches('/'), config.bucket),
        // With virtual-hosted style the endpoint already names the bucket.
        (Some(endpoint), true) => endpoint.trim_end_matches('/').to_string(),
        (None, _) => format!("https://{}.s3.{}.amazonaws.com", config.bucket, config.region),
    }
}

/// The `<Code>` of an S3 error body, such as `SignatureDoesNotMatch`.
pub(super) fn s3_code(message: &str) -> Option<&str> {
    xml_field(message, "Code")
}

fn xml_field<'a>(message: &'a str, field: &str) -> Option<&'a str> {
    let open = format!("<{field}>");
    let start = message.find(&open)? + open.len();
    let end = message[start..].find(&format!("</{field}>"))? + start;
    Some(&message[start..end])
}

impl S3Storage {
    /// `api_base` is the public base of this API, used for signed links.
    pub fn new(config: S3Config, api_base: &str) -> Result<S3Storage, StorageError> {
        let retry = |budget: Duration, max_retries: usize| RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: MAX_FILE_BACKOFF,
                base: 2.0,
            },
            max_retries,
            retry_timeout: budget,
        };
        // The budget, not a count, bounds the retries of one request.
        let store = Self::builder(&config, ClientOptions::new().with_connect_timeout(Duration::from_secs(5)))
            .with_retry(retry(config.retry_budget, 1_000))
            .build()
            .map_err(|e| StorageError::Remote(format!("S3 configuration: {}", one_line(&e.to_string()))))?;
        let probe = Self::builder(
            &config,
            ClientOptions::new().with_connect_timeout(Duration::from_secs(3)).with_timeout(Duration::from_secs(10)),
        )
        .with_retry(retry(Duration::from_secs(3), 2))
        .build()
        .map_err(|e| StorageError::Remote(format!("S3 configuration: {}", one_line(&e.to_string()))))?;
        // Presigning is local: this store only ever forms URLs, for the
        // address viewers use, which a signature covers.
        let signer = match &config.public_endpoint {
            None => None,
            Some(public) => Some(Arc::new(
                Self::builder(&S3Config { endpoint: Some(public.clone()), ..config.clone() }, ClientOptions::new())
                    .build()
                    .map_err(|e| StorageError::Remote(format!("S3 configuration: {}", one_line(&e.to_string()))))?,
            )),
        };
        let viewer_endpoint = config.public_endpoint.as_deref().or(config.endpoint.as_deref());
        let links = match (config.signed_url_ttl, &config.public_base_url) {
            (Some(ttl), _) => Links::Signed { api_base: api_base.trim_end_matches('/').to_string(), ttl },
            (None, Some(base)) => Links::Public(base.trim_end_matches('/').to_string()),
            (None, None) => Links::Public(bucket_url(&config, viewer_endpoint)),
        };
        let signer = signer.unwrap_or_else(|| Arc::new(store.clone()));
        Ok(S3Storage { store: Arc::new(store), probe: Arc::new(probe), signer, config: Arc::new(config), links })
    }

    fn builder(config: &S3Config, client: ClientOptions) -> AmazonS3Builder {
        // Explicit keys: nothing else from the environment may change the
        // request. No keys: the environment (session tokens, instance roles).
        let mut builder = match (&config.access_key_id, &config.secret_access_key) {
            (Some(id), Some(secret)) => AmazonS3Builder::new().with_access_key_id(id).with_secret_access_key(secret),
            _ => AmazonS3Builder::from_env(),
        };
        // Client options first: `with_allow_http` below is one of them.
        builder = builder
            .with_client_options(client)
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_virtual_hosted_style_request(config.virtual_hosted_style);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
        }
        builder
    }

    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// The object path of a storage key: the bucket prefix, then the key.
    fn path(&self, key: &str) -> Path {
        let key = key.trim_matches('/');
        if self.config.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.config.prefix))
        }
    }

    fn attributes(key: &str) -> Attributes {
        let mut attributes = Attributes::new();
        if let Some((content_type, cache_control)) = object_headers(key) {
            attributes.insert(Attribute::ContentType, content_type.into());
            attributes.insert(Attribute::CacheControl, cache_control.into());
        }
        attributes
    }

    /// Runs `op` until it succeeds, fails for good, or has been failing
    /// for longer than the retry budget.
    async fn retrying<T, F, Fut>(&self, what: &str, key: &str, mut op: F) -> Result<T, StorageError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let started = Instant::now();
        let mut delay = Duration::from_millis(200);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let failure = match op().await {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            if let Failure::Store(object_store::Error::NotFound { .. }) = failure {
                if what == "download" {
                    return Err(StorageError::NotFound(key.to_string()));
                }
            }
            if failure.is_permanent() || started.elapsed() + delay > self.config.retry_budget {
                let hint = if failure.is_refusal() {
                    "; check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the key's permissions"
                } else {
                    ""
                };
                return Err(StorageError::Remote(format!(
                    "S3 {} (bucket `{}`): {what} of `{}` failed after {attempts} attempt{} in {:.1}s: {failure}{hint}",
                    self.config.endpoint_display(),
                    self.config.bucket,
                    self.path(key),
                    if attempts == 1 { "" } else { "s" },
                    started.elapsed().as_secs_f64(),
                )));
            }
            tracing::warn!(key, attempts, error = %failure, retry_in = ?delay, "S3 {what} failed; retrying");
            crate::metrics::storage_retry();
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_FILE_BACKOFF);
        }
    }

    async fn put_small(&self, location: &Path, key: &str, payload: PutPayload) -> Result<(), Failure> {
        let options = PutOptions { attributes: Self::attributes(key), ..Default::default() };
        self.store.put_opts(location, payload, options).await?;
        Ok(())
    }

    async fn put_multipart(&self, location: &Path, key: &str, file: &LocalPath) -> Result<(), Failure> {
        let options = PutMultipartOptions { attributes: Self::attributes(key), ..Default::default() };
        let upload = self.store.put_multipart_opts(location, options).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let written = async {
            let mut file = tokio::fs::File::open(file).await.map_err(Failure::Local)?;
            loop {
                let mut part = Vec::with_capacity(PART_SIZE);
                let read = (&mut file).take(PART_SIZE as u64).read_to_end(&mut part).await.map_err(Failure::Local)?;
                if read == 0 {
                    return Ok::<_, Failure>(());
                }
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                writer.put(Bytes::from(part));
            }
        }
        .await;
        match written {
            Ok(()) => {
                writer.finish().await?;
                Ok(())
            }
            Err(e) => {
                // Parts of an unfinished upload are billed until aborted.
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(key, error = %abort, "could not abort a failed multipart upload");
                }
                Err(e)
            }
        }
    }

    /// Verifies at start-up that the endpoint answers, the credentials are
    /// accepted, the bucket exists and we may write and delete in it. The
    /// error is one line that says which of these failed and what to fix.
    pub async fn check(&self) -> Result<(), StorageError> {
        let endpoint = self.config.endpoint_display();
        let bucket = &self.config.bucket;
        let probe_key = format!(".vidpipe-check-{}", uuid::Uuid::new_v4().simple());
        let location = self.path(&probe_key);
        let prefix = (!self.config.prefix.is_empty()).then(|| Path::from(self.config.prefix.as_str()));
        let result = async {
            self.probe.list_with_delimiter(prefix.as_ref()).await?;
            self.probe.put(&location, PutPayload::from_static(b"vidpipe start-up check")).await?;
            self.probe.delete(&location).await
        }
        .await;
        let Err(error) = result else { return Ok(()) };
        let message = describe(&error);
        let code = s3_code(&error.to_string()).map(str::to_string);
        let line = match (&error, code.as_deref()) {
            (_, Some("NoSuchBucket")) | (object_store::Error::NotFound { .. }, None) => format!(
                "S3 bucket `{bucket}` does not exist at {endpoint}: create it, or fix the bucket in VIDPIPE_STORAGE_URL"
            ),
            (_, Some(code @ ("SignatureDoesNotMatch" | "InvalidAccessKeyId" | "AccessDenied" | "InvalidToken"))) => {
                format!(
                    "S3 at {endpoint} refused the credentials ({code}) for access key `{}` on bucket `{bucket}`: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                    self.config.access_key_id.as_deref().unwrap_or("<from the environment>")
                )
            }
            (object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }, _) => format!(
                "S3 at {endpoint} refused access to bucket `{bucket}` ({message}): check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the key's permissions"
            ),
            _ => match self.reachable().await {
                Err(e) => format!(
                    "S3 endpoint {endpoint} is unreachable ({e}): check AWS_ENDPOINT_URL and that the server is running"
                ),
                Ok(()) => format!("S3 at {endpoint} (bucket `{bucket}`) failed the start-up check: {message}"),
            },
        };
        Err(StorageError::Remote(line))
    }

    /// Writes a small object at `key` (under the bucket prefix), for checks.
    pub(super) async fn put_probe(&self, key: &str) -> Result<(), String> {
        let payload = PutPayload::from_static(b"vidpipe check");
        let options = PutOptions { attributes: Self::attributes("probe.txt"), ..Default::default() };
        self.probe.put_opts(&self.path(key), payload, options).await.map(|_| ()).map_err(|e| describe(&e))
    }

    pub(super) async fn delete_probe(&self, key: &str) -> Result<(), String> {
        self.probe.delete(&self.path(key)).await.map_err(|e| describe(&e))
    }

    /// The URL a player fetches `key` from: presigned in signed mode, else
    /// the public link.
    pub(super) async fn player_url(&self, key: &str) -> Result<String, StorageError> {
        Ok(match self.presigned_url(key).await? {
            Some(signed) => signed,
            None => self.url(key),
        })
    }

    /// A signed request on the bucket itself (`?<subresource>`, such as
    /// `cors`): `(status, body)`, or why there is no answer.
    pub(super) async fn bucket_request(
        &self,
        method: reqwest::Method,
        subresource: &str,
        body: Vec<u8>,
    ) -> Result<(u16, String), String> {
        let config = &self.config;
        let url = format!("{}/?{subresource}", bucket_url(config, config.endpoint.as_deref()));
        let request = sign_bucket_request(self.probe.credentials(), &config.region, method, &url, body).await?;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().map_err(|e| e.to_string())?;
        let response = client.execute(request).await.map_err(|e| format!("{url}: {e}"))?;
        let status = response.status().as_u16();
        Ok((status, response.text().await.unwrap_or_default()))
    }

    /// Whether a TCP connection to the endpoint can be opened at all.
    async fn reachable(&self) -> Result<(), String> {
        let endpoint = self.config.endpoint_display();
        let url = object_store::signer::Url::parse(&endpoint).map_err(|e| format!("bad URL: {e}"))?;
        let host = url.host_str().ok_or("no host in the URL")?.to_string();
        let port = url.port_or_known_default().ok_or("no port in the URL")?;
        match tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect((host.as_str(), port))).await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("connection timed out after 3s".into()),
        }
    }
}

#[async_trait]
impl Storage for S3Storage {
    async fn put_file(&self, key: &str, path: &LocalPath) -> Result<(), StorageError> {
        let location = self.path(key);
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|source| StorageError::Io { key: path.display().to_string(), source })?
            .len();
        if size > self.config.multipart_threshold {
            return self.retrying("multipart upload", key, || self.put_multipart(&location, key, path)).await;
        }
        // Read once; every retry sends the same bytes.
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|source| StorageError::Io { key: path.display().to_string(), source })?;
        let payload = PutPayload::from(Bytes::from(bytes));
        self.retrying("upload", key, || self.put_small(&location, key, payload.clone())).await
    }

    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        let location = self.path(key);
        let payload = PutPayload::from(Bytes::from(bytes));
        self.retrying("upload", key, || self.put_small(&location, key, payload.clone())).await
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError> {
        let location = self.path(prefix);
        self.retrying("delete", prefix, || async {
            // List first, then delete what was listed, until nothing is
            // left: a retry resumes with whatever the last round missed.
            let objects: Vec<Path> =
                self.store.list(Some(&location)).map_ok(|meta| meta.location).try_collect().await?;
            if objects.is_empty() {
                return Ok(());
            }
            let locations = futures::stream::iter(objects.into_iter().map(Ok)).boxed();
            self.store.delete_stream(locations).try_collect::<Vec<Path>>().await?;
            Ok(())
        })
        .await
    }

    async fn list_children(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let location = self.path(prefix);
        let listing = self
            .retrying("list", prefix, || async { Ok(self.store.list_with_delimiter(Some(&location)).await?) })
            .await?;
        let mut names: Vec<String> = listing
            .common_prefixes
            .iter()
            .chain(listing.objects.iter().map(|o| &o.location))
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn get_bytes(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        let location = self.path(key);
        let bytes =
            self.retrying("download", key, || async { Ok(self.store.get(&location).await?.bytes().await?) }).await?;
        Ok(bytes.to_vec())
    }

    fn url(&self, key: &str) -> String {
        match &self.links {
            Links::Public(base) => format!("{base}/{}", self.path(key)),
            Links::Signed { api_base, .. } => match super::playback_route(key) {
                Some(route) => format!("{api_base}{route}"),
                // Not a published lecture file: nothing the API can serve.
                None => format!("{api_base}/api/lectures"),
            },
        }
    }

    async fn presigned_url(&self, key: &str) -> Result<Option<String>, StorageError> {
        let Links::Signed { ttl, .. } = &self.links else { return Ok(None) };
        let url =
            self.signer.signed_url(Method::GET, &self.path(key), *ttl).await.map_err(|e| {
                StorageError::Remote(format!("signing a URL for `{key}`: {}", one_line(&e.to_string())))
            })?;
        Ok(Some(url.to_string()))
    }

    fn upload_concurrency(&self) -> usize {
        self.config.upload_concurrency
    }
}

/// Signs `request` with the store's credentials (explicit keys, or the
/// environment's chain) using `object_store`'s SigV4 authorizer.
async fn sign_bucket_request(
    credentials: &object_store::aws::AwsCredentialProvider,
    region: &str,
    method: Method,
    url: &str,
    body: Vec<u8>,
) -> Result<reqwest::Request, String> {
    let credential = credentials.get_credential().await.map_err(|e| format!("S3 credentials: {e}"))?;
    let md5 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, md5_digest(&body));
    let mut request: HttpRequest = axum::http::Request::builder()
        .method(method)
        .uri(url)
        // PutBucketCors requires a body checksum; Content-MD5 is the one every store accepts.
        .header("content-md5", HeaderValue::from_str(&md5).map_err(|e| e.to_string())?)
        .body(HttpRequestBody::from(body))
        .map_err(|e| format!("bad S3 URL {url}: {e}"))?;
    AwsAuthorizer::new(&credential, "s3", region).try_authorize(&mut request, None).map_err(|e| e.to_string())?;
    let (parts, body) = request.into_parts();
    let body = body.as_bytes().cloned().unwrap_or_default();
    let mut out = reqwest::Request::new(parts.method, url.parse().map_err(|e| format!("bad S3 URL {url}: {e}"))?);
    *out.headers_mut() = parts.headers;
    *out.body_mut() = Some(body.into());
    Ok(out)
}

fn md5_digest(body: &[u8]) -> [u8; 16] {
    use md5::Digest;
    md5::Md5::digest(body).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> S3Config {
        S3Config {
            bucket: "media".into(),
            prefix: "vod".into(),
            endpoint: Some("http://127.0.0.1:9000".into()),
            region: "us-east-1".into(),
            access_key_id: Some("AK".into()),
            secret_access_key: Some("SK".into()),
            virtual_hosted_style: false,
            public_base_url: None,
            signed_url_ttl: None,
            upload_concurrency: 8,
            retry_budget: Duration::from_secs(5),
            multipart_threshold: S3Config::DEFAULT_MULTIPART_THRESHOLD,
            cors_origins: Vec::new(),
            public_endpoint: None,
        }
    }

    #[test]
    fn public_links_are_path_style_under_the_bucket_prefix() {
        let s3 = S3Storage::new(config(), "http://api").unwrap();
        assert_eq!(s3.url("L/t/master.m3u8"), "http://127.0.0.1:9000/media/vod/L/t/master.m3u8");
        let cdn = S3Storage::new(
            S3Config { public_base_url: Some("https://cdn.example.com".into()), ..config() },
            "http://api",
        )
        .unwrap();
        assert_eq!(cdn.url("L/t/master.m3u8"), "https://cdn.example.com/vod/L/t/master.m3u8");
        let aws = S3Storage::new(S3Config { endpoint: None, prefix: String::new(), ..config() }, "http://api").unwrap();
        assert_eq!(aws.url("L/t/thumbnail.jpg"), "https://media.s3.us-east-1.amazonaws.com/L/t/thumbnail.jpg");
    }

    #[test]
    fn signed_links_go_through_the_api() {
        let s3 =
            S3Storage::new(S3Config { signed_url_ttl: Some(Duration::from_secs(60)), ..config() }, "http://api:8080/")
                .unwrap();
        assert_eq!(s3.url("L/t/master.m3u8"), "http://api:8080/api/lectures/L/master.m3u8");
        assert_eq!(s3.url("L/t/thumbnail.jpg"), "http://api:8080/api/lectures/L/thumbnail.jpg");
    }

    #[tokio::test]
    async fn links_use_the_public_endpoint_where_viewers_reach_the_store() {
        let public = || S3Config { public_endpoint: Some("http://localhost:19000".into()), ..config() };
        let signed = |c: S3Config| {
            S3Storage::new(S3Config { signed_url_ttl: Some(Duration::from_secs(60)), ..c }, "http://api").unwrap()
        };
        let s3 = S3Storage::new(public(), "http://api").unwrap();
        assert_eq!(s3.url("L/t/master.m3u8"), "http://localhost:19000/media/vod/L/t/master.m3u8");
        let url = signed(public()).presigned_url("L/t/720p/seg_00000.m4s").await.unwrap().unwrap();
        assert!(url.starts_with("http://localhost:19000/media/vod/L/t/720p/seg_00000.m4s?"), "{url}");
        assert!(url.contains("X-Amz-Signature="), "{url}");
        let url = signed(config()).presigned_url("L/t/720p/seg_00000.m4s").await.unwrap().unwrap();
        assert!(url.starts_with("http://127.0.0.1:9000/media/"), "without it, the endpoint: {url}");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        assert!(!format!("{:?}", config()).contains("\"SK\""));
    }

    #[test]
    fn error_codes_are_read_from_s3_bodies() {
        let body = "Server returned non-2xx status code: 403 Forbidden: <?xml?><Error><Code>SignatureDoesNotMatch</Code></Error>";
        assert_eq!(s3_code(body), Some("SignatureDoesNotMatch"));
        assert_eq!(http_status(body), Some(403));
        assert_eq!(s3_code("connection refused"), None);
        assert_eq!(one_line("a\n  b\tc"), "a b c");
    }
}
