//! All configuration, from flags and environment variables, in one place.
//!
//! Two stages, as in ripgrep: clap parses and validates each value on its own
//! (`Args`), then [`Config::from_args`] checks the values together, fills in the
//! defaults that depend on other values and creates the data directory. Every
//! error names the flag or variable to fix.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::domain::{JobState, ProcessingStatus};
use crate::events::webhooks::{SigningKey, WebhookConfig};
use crate::keys::{KeyName, Scope};
use crate::publish::s3::S3Config;
use crate::tools::Tools;
use crate::transcode::chunks::Chunking;
use crate::transcode::plan::Ladder;

#[derive(Debug, Parser)]
#[command(
    name = "vidpipe",
    version,
    about = "Upload video, get an HLS ladder: API, durable queue and ffmpeg workers in one binary."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log lines as text, or as one JSON object per line (with lecture and job ids as fields).
    #[arg(long, global = true, env = "VIDPIPE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API and a worker in one process (embedded defaults).
    Serve(ServiceArgs),
    /// Run the HTTP API only; workers run elsewhere against the same database.
    Api(ServiceArgs),
    /// Process jobs only.
    Worker(ServiceArgs),
    /// Probe, plan, encode and package one file, with no server and no queue.
    Transcode(TranscodeArgs),
    /// Inspect and operate the job queue.
    Queue {
        #[command(subcommand)]
        action: QueueAction,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        target: QueueArgs,
    },
    /// List and delete lectures.
    Lectures {
        #[command(subcommand)]
        action: LecturesAction,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        target: LecturesArgs,
    },
    /// Create, list and revoke API keys (talks to the database directly).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// List webhook deliveries and send dead ones again (talks to the database directly).
    Webhooks {
        #[command(subcommand)]
        action: WebhooksAction,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Check ffmpeg, the database, the queue and storage, and run a tiny transcode.
    Doctor {
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        service: ServiceArgs,
    },
    /// Print shell completions: `vidpipe completions bash > /etc/bash_completion.d/vidpipe`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Exit 0 if URL answers 2xx within 5 s, else 1: a container health check
    /// that needs no curl in the image.
    Healthcheck {
        /// The liveness route of an API, or a worker's `VIDPIPE_METRICS_LISTEN` /metrics.
        #[arg(default_value = "http://127.0.0.1:8080/api/health")]
        url: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Clone, Subcommand)]
pub enum QueueAction {
    /// Jobs per state, and whether the queue is paused.
    Status,
    /// Jobs in one state.
    List {
        #[arg(long, value_enum, default_value_t = JobState::Failed)]
        state: JobState,
        /// Jobs per page, 1 to 1000.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Which page, from 1.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        page: u32,
    },
    /// Requeue a failed or cancelled job, or every failed one.
    Retry {
        #[arg(required_unless_present = "all_failed")]
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        all_failed: bool,
    },
    /// Cancel a job; a running ffmpeg is stopped at the worker's next heartbeat.
    Cancel { id: String },
    /// Stop claiming new jobs everywhere (running jobs finish).
    Pause,
    /// Claim jobs again.
    Resume,
    /// Remove finished job records (lectures keep their outcome).
    Clean {
        #[arg(long, default_value = "24h", value_parser = parse_age)]
        completed_older_than: Duration,
        #[arg(long, default_value = "7d", value_parser = parse_age)]
        failed_older_than: Duration,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum LecturesAction {
    /// Lectures, newest first.
    List {
        #[arg(long, value_enum)]
        status: Option<ProcessingStatus>,
        #[arg(long)]
        course_id: Option<String>,
        /// Lectures per page, 1 to 1000.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Which page, from 1.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        page: u32,
    },
    /// Delete one lecture, or every lecture with a status older than an age
    /// (after showing them and asking, unless --yes).
    Delete {
        #[arg(required_unless_present = "status")]
        id: Option<String>,
        #[arg(long, value_enum, conflicts_with = "id", requires = "older_than")]
        status: Option<ProcessingStatus>,
        /// With --status: only lectures created longer ago than this (`0s`: any age).
        #[arg(long, value_parser = parse_age, requires = "status")]
        older_than: Option<Duration>,
        /// Show what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Delete without asking (needed when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum KeysAction {
    /// Create a key and print its secret (shown this once; only a hash is stored).
    Create {
        /// A name to list and revoke the key by.
        #[arg(long, value_parser = parse_key_name)]
        name: KeyName,
        /// `upload`: create uploads, read lectures and jobs. `admin`: everything.
        #[arg(long, value_parser = parse_scope)]
        scope: Scope,
    },
    /// Keys with their scope, creation and last use (never the secret).
    List,
    /// Revoke a key: every API process refuses it from its next request.
    Revoke {
        #[arg(value_parser = parse_key_name)]
        name: KeyName,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum WebhooksAction {
    /// Deliveries, newest first.
    List {
        /// Only deliveries in this state: pending, delivered or dead.
        #[arg(long, value_parser = ["pending", "delivered", "dead"])]
        state: Option<String>,
        /// Deliveries to show, 1 to 1000.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// Send a dead delivery (its id, `evt_N`) again, or every dead one.
    Retry {
        #[arg(required_unless_present = "all_dead")]
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        all_dead: bool,
    },
}

/// Where the database is, for commands that need nothing else.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Directory of the embedded SQLite database.
    #[arg(long, global = true, env = "VIDPIPE_DATA_DIR", default_value = "./vidpipe-data")]
    pub data_dir: PathBuf,

    /// Database URL: sqlite://PATH or postgres://... [default: sqlite://<data-dir>/vidpipe.db]
    #[arg(long, global = true, env = "DATABASE_URL")]
    pub database_url: Option<String>,
}

impl DatabaseArgs {
    /// The database URL to use, after checking that it is one we support.
    pub fn url(&self) -> Result<String, ConfigError> {
        database_url(self.database_url.clone(), &self.data_dir)
    }

    /// The URL of a database a service has already made. Commands that
    /// inspect a service use this: a typo in `--data-dir` must not leave an
    /// empty new database behind and report an empty queue.
    pub fn existing_url(&self) -> Result<String, ConfigError> {
        let url = self.url()?;
        if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            let path = std::path::Path::new(path.split('?').next().unwrap_or(path));
            if !path.exists() {
                return Err(ConfigError(format!(
                    "no vidpipe database at {}: point --data-dir / VIDPIPE_DATA_DIR (or --database-url / \
                     DATABASE_URL) at the service's, or start `vidpipe serve` there first",
                    path.display()
                )));
            }
        }
        Ok(url)
    }
}

/// Where `vidpipe queue` finds a service's jobs. Global: the flags may come
/// before or after the action (`vidpipe queue status --data-dir D`).
#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// The service's Redis queue, if it has one: redis://HOST:PORT[/DB].
    #[arg(long, global = true, env = "VIDPIPE_QUEUE_URL", value_parser = parse_redis_url)]
    pub queue_url: Option<String>,
}

/// Where `vidpipe lectures` finds a service's lectures, their jobs and their
/// published files. Global, like [`QueueArgs`].
#[derive(Debug, Clone, Args)]
pub struct LecturesArgs {
    #[command(flatten)]
    pub queue: QueueArgs,

    /// The service's API address: links are made from it without --public-base-url.
    #[arg(long, global = true, env = "VIDPIPE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Base of the links lectures show (as the service's). [default: http://<listen>, or the bucket's URL]
    #[arg(long, global = true, env = "VIDPIPE_PUBLIC_BASE_URL", value_parser = parse_base_url)]
    pub public_base_url: Option<String>,

    #[command(flatten)]
    pub storage: StorageArgs,
}

impl LecturesArgs {
    /// The storage settings and the base of links, validated as a service's.
    pub fn storage(&self) -> Result<(StorageConfig, String), ConfigError> {
        let storage = StorageConfig::from_args(&self.storage, self.public_base_url.as_deref())?;
        let base = self.public_base_url.clone().unwrap_or_else(|| format!("http://{}", self.listen));
        Ok((storage, base))
    }
}

/// Settings shared by `serve`, `api` and `worker`.
#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    /// Address the HTTP API listens on.
    #[arg(long, env = "VIDPIPE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory for the database, uploads, work files and published media.
    #[arg(long, env = "VIDPIPE_DATA_DIR", default_value = "./vidpipe-data")]
    pub data_dir: PathBuf,

    /// Database URL: sqlite://PATH or postgres://... [default: sqlite://<data-dir>/vidpipe.db]
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// Queue in Redis instead of the database: redis://HOST:PORT[/DB]. Lecture records stay in the database.
    #[arg(long, env = "VIDPIPE_QUEUE_URL", value_parser = parse_redis_url)]
    pub queue_url: Option<String>,

    /// How often a worker checks that every unfinished lecture has a job (re-enqueueing lost ones).
    #[arg(long, env = "VIDPIPE_RECONCILE_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub reconcile_interval: Duration,

    /// Jobs this process transcodes at once.
    #[arg(long, env = "VIDPIPE_CONCURRENCY", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,

    /// Largest accepted upload, in bytes or with a unit (500MB, 2GiB).
    #[arg(long, env = "VIDPIPE_MAX_UPLOAD_BYTES", default_value = "2GiB", value_parser = parse_bytes)]
    pub max_upload_bytes: u64,

    /// Rendition heights of the HLS ladder, comma separated.
    #[arg(long, env = "VIDPIPE_LADDER", default_value = "240,360,720", value_parser = parse_ladder)]
    pub ladder: Ladder,

    /// Base of the links the API returns (with S3 storage and no signing: of
    /// the objects, e.g. a CDN or the bucket's public URL). [default: http://<listen>, or the bucket's URL]
    #[arg(long, env = "VIDPIPE_PUBLIC_BASE_URL", value_parser = parse_base_url)]
    pub public_base_url: Option<String>,

    /// Sources longer than this (e.g. 10m) are split into chunks that
    /// several workers encode at once; `off`: never split.
    #[arg(long, env = "VIDPIPE_CHUNK_AFTER", default_value = "off", value_parser = parse_optional_duration)]
    pub chunk_after: OptionalDuration,

    /// Length of a chunk in seconds: a multiple of the 6 s segment length.
    #[arg(long, env = "VIDPIPE_CHUNK_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u32).range(6..=3600))]
    pub chunk_seconds: u32,

    /// Threads each stage of an encode may use (decoding, filters, each
    /// rendition's x264), for machines shared with other work; 0: ffmpeg's
    /// choice (every core).
    #[arg(long, env = "VIDPIPE_ENCODER_THREADS", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=64))]
    pub encoder_threads: u16,

    /// Longest a single transcode may run before ffmpeg is killed.
    #[arg(long, env = "VIDPIPE_JOB_TIMEOUT", default_value = "2h", value_parser = parse_duration)]
    pub job_timeout: Duration,

    /// ffmpeg is killed when its output has not advanced for this long.
    #[arg(long, env = "VIDPIPE_STALL_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub stall_timeout: Duration,

    /// How long a worker's claim on a job lasts without a heartbeat.
    #[arg(long, env = "VIDPIPE_LEASE", default_value = "30s", value_parser = parse_duration)]
    pub lease: Duration,

    /// How often an idle worker polls the queue. New jobs wake workers at
    /// once in `serve` and on PostgreSQL (LISTEN/NOTIFY); polling is the fallback.
    #[arg(long, env = "VIDPIPE_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub poll_interval: Duration,

    /// Attempts per job before it fails for good.
    #[arg(long, env = "VIDPIPE_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub attempts: u32,

    /// Delay before the first retry; doubled for each further attempt, with jitter.
    #[arg(long, env = "VIDPIPE_BACKOFF", default_value = "5s", value_parser = parse_duration)]
    pub backoff: Duration,

    /// On SIGTERM/SIGINT, how long running jobs may finish before they are stopped and handed back.
    #[arg(long, env = "VIDPIPE_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    #[command(flatten)]
    pub tools: ToolArgs,

    #[command(flatten)]
    pub storage: StorageArgs,

    #[command(flatten)]
    pub security: SecurityArgs,

    #[command(flatten)]
    pub operations: OperationsArgs,
}

/// Metrics, webhooks, alerts and scheduled cleanup.
#[derive(Debug, Clone, Args)]
pub struct OperationsArgs {
    /// Also serve GET /metrics (Prometheus, no key) on this address, e.g. for
    /// `vidpipe worker`, which has no API. [default: only /metrics on the API, with an admin key]
    #[arg(long, env = "VIDPIPE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// URLs that receive webhooks (lecture events and alerts), comma separated.
    #[arg(long, env = "VIDPIPE_WEBHOOK_URL", value_delimiter = ',', value_parser = parse_webhook_url)]
    pub webhook_url: Vec<String>,

    /// Signing secret of the webhooks, whsec_<base64> (Standard Webhooks).
    #[arg(long, env = "VIDPIPE_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// Delay before a failed webhook is sent again; doubled each time (at most 1h), for a day.
    #[arg(long, env = "VIDPIPE_WEBHOOK_BACKOFF", default_value = "5s", value_parser = parse_duration)]
    pub webhook_backoff: Duration,

    /// How often alert rules are checked.
    #[arg(long, env = "VIDPIPE_ALERT_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub alert_interval: Duration,

    /// Alert when more than this share of the jobs that ended in the alert window failed (0-1).
    #[arg(long, env = "VIDPIPE_ALERT_FAILURE_RATE", default_value_t = 0.5, value_parser = parse_fraction)]
    pub alert_failure_rate: f64,

    /// The window of the failure-rate alert.
    #[arg(long, env = "VIDPIPE_ALERT_WINDOW", default_value = "1h", value_parser = parse_duration)]
    pub alert_window: Duration,

    /// Alert when more jobs than this are waiting.
    #[arg(long, env = "VIDPIPE_ALERT_BACKLOG", default_value_t = 50)]
    pub alert_backlog: u64,

    /// Alert when the oldest waiting job has waited longer than this.
    #[arg(long, env = "VIDPIPE_ALERT_OLDEST_WAITING", default_value = "30m", value_parser = parse_duration)]
    pub alert_oldest_waiting: Duration,

    /// Alert when no worker has sent a heartbeat for this long.
    #[arg(long, env = "VIDPIPE_ALERT_NO_WORKER", default_value = "2m", value_parser = parse_duration)]
    pub alert_no_worker: Duration,

    /// How often old job records, events and sources are cleaned (one process at a time).
    #[arg(long, env = "VIDPIPE_CLEAN_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    pub clean_interval: Duration,

    /// Completed job records older than this are removed (lectures keep their outcome).
    #[arg(long, env = "VIDPIPE_CLEAN_COMPLETED_AFTER", default_value = "24h", value_parser = parse_duration)]
    pub clean_completed_after: Duration,

    /// Failed and cancelled job records older than this are removed.
    #[arg(long, env = "VIDPIPE_CLEAN_FAILED_AFTER", default_value = "7d", value_parser = parse_duration)]
    pub clean_failed_after: Duration,
}

/// Who may reach the API, and how much any one caller may ask of it.
#[derive(Debug, Clone, Args)]
pub struct SecurityArgs {
    /// Serve without API keys even on a non-loopback address (on purpose:
    /// e.g. behind a proxy that authenticates).
    #[arg(long, env = "VIDPIPE_NO_AUTH")]
    pub no_auth: bool,

    /// Host names the API answers to, comma separated (`*`: any). Others get
    /// 400, which stops DNS rebinding. [default: the listen address, localhost
    /// and the VIDPIPE_PUBLIC_BASE_URL host]
    #[arg(long, env = "VIDPIPE_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,

    /// Web origins allowed to call the API from a browser (CORS), comma
    /// separated, e.g. https://app.example.com. [default: none]
    #[arg(long, env = "VIDPIPE_CORS_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_origins: Vec<String>,

    /// Uploads per key (per client address without keys), e.g. `5/15m`. [default: unlimited]
    #[arg(long, env = "VIDPIPE_UPLOAD_RATE_LIMIT", value_parser = parse_rate_limit)]
    pub upload_rate_limit: Option<RateLimit>,

    /// Take the client address from the last X-Forwarded-For entry (set only
    /// behind a reverse proxy that writes it).
    #[arg(long, env = "VIDPIPE_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,

    /// Uploads received at once; past that, 503 with Retry-After.
    #[arg(long, env = "VIDPIPE_MAX_CONCURRENT_UPLOADS", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub max_concurrent_uploads: u16,

    /// ffprobe runs at once for uploads; others wait (bounded by the upload limit).
    #[arg(long, env = "VIDPIPE_MAX_CONCURRENT_PROBES", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub max_concurrent_probes: u16,

    /// Open HTTP connections; further ones wait in the kernel's backlog.
    #[arg(long, env = "VIDPIPE_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// Time a client has to send a request's headers; also how long an idle
    /// keep-alive connection stays open.
    #[arg(long, env = "VIDPIPE_HEADER_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// Longest pause between two pieces of an upload's body before it is dropped.
    #[arg(long, env = "VIDPIPE_BODY_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub body_idle_timeout: Duration,

    /// Uploads are refused (507) when the data directory's disk has less free space than this. `0` turns it off.
    #[arg(long, env = "VIDPIPE_MIN_FREE_DISK", default_value = "1GiB", value_parser = parse_bytes_or_zero)]
    pub min_free_disk: u64,

    /// Sources of failed lectures are removed this long after the failure (a
    /// retry after that needs a new upload).
    #[arg(long, env = "VIDPIPE_SOURCE_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub source_retention: Duration,

    /// A resumable (tus) upload not finished this long after it was created is removed with its bytes.
    #[arg(long, env = "VIDPIPE_UPLOAD_EXPIRY", default_value = "24h", value_parser = parse_duration)]
    pub upload_expiry: Duration,
}

/// Where published video goes. The `AWS_*` variables are the standard ones,
/// so the same environment serves the AWS CLI and vidpipe.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Publish to an S3-compatible store, s3://BUCKET[/PREFIX]. [default: the local disk, <data-dir>/media]
    #[arg(long, global = true, env = "VIDPIPE_STORAGE_URL")]
    pub storage_url: Option<String>,

    /// S3 endpoint for MinIO, Ceph, R2, GCS interop...; unset means AWS.
    #[arg(long = "s3-endpoint", global = true, env = "AWS_ENDPOINT_URL")]
    pub s3_endpoint: Option<String>,

    /// The store's address as viewers reach it, when it differs from
    /// AWS_ENDPOINT_URL (an internal or compose-network name): presigned
    /// links are signed for it, and unsigned links default to it. [default: AWS_ENDPOINT_URL]
    #[arg(long = "s3-public-endpoint", global = true, env = "VIDPIPE_S3_PUBLIC_ENDPOINT")]
    pub s3_public_endpoint: Option<String>,

    /// S3 region (MinIO accepts any).
    #[arg(long = "s3-region", global = true, env = "AWS_REGION", default_value = "us-east-1")]
    pub s3_region: String,

    /// S3 access key; unset: the environment's credential chain (instance roles...).
    #[arg(long = "s3-access-key-id", global = true, env = "AWS_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,

    /// S3 secret key.
    #[arg(long = "s3-secret-access-key", global = true, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,

    /// Virtual-hosted-style requests (BUCKET.HOST) instead of path-style (HOST/BUCKET), which MinIO needs.
    #[arg(long = "s3-virtual-hosted-style", global = true, env = "VIDPIPE_S3_VIRTUAL_HOSTED_STYLE")]
    pub s3_virtual_hosted_style: bool,

    /// Keep the bucket private: videoLink goes through the API, which hands out presigned URLs valid this long.
    #[arg(long, global = true, env = "VIDPIPE_SIGNED_URL_TTL", value_parser = parse_duration)]
    pub signed_url_ttl: Option<Duration>,

    /// Files uploaded to S3 at once while publishing.
    #[arg(long, global = true, env = "VIDPIPE_UPLOAD_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub upload_concurrency: u16,

    /// How long uploads of one file keep being retried while S3 fails, before the attempt fails (and is retried later).
    #[arg(long, global = true, env = "VIDPIPE_S3_RETRY_BUDGET", default_value = "2m", value_parser = parse_duration)]
    pub s3_retry_budget: Duration,

    /// Web origins that may play from the bucket (comma separated, or `*`):
    /// at start-up vidpipe puts a CORS rule for them on the bucket
    /// (PutBucketCors; its other rules are kept). [default: leave the bucket's CORS alone]
    #[arg(long = "s3-cors-origins", global = true, env = "VIDPIPE_S3_CORS_ORIGINS", value_delimiter = ',', value_parser = parse_bucket_origin)]
    pub s3_cors_origins: Vec<String>,
}

/// Where the ffmpeg binaries are.
#[derive(Debug, Clone, Args)]
pub struct ToolArgs {
    /// ffmpeg executable.
    #[arg(long, env = "VIDPIPE_FFMPEG", default_value = "ffmpeg")]
    pub ffmpeg: PathBuf,
    /// ffprobe executable.
    #[arg(long, env = "VIDPIPE_FFPROBE", default_value = "ffprobe")]
    pub ffprobe: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct TranscodeArgs {
    /// The video to transcode.
    pub input: PathBuf,
    /// Directory to write master.m3u8, the renditions and the thumbnail into.
    #[arg(long)]
    pub out: PathBuf,
    /// Rendition heights of the HLS ladder, comma separated.
    #[arg(long, env = "VIDPIPE_LADDER", default_value = "240,360,720", value_parser = parse_ladder)]
    pub ladder: Ladder,
    /// Print the ladder's ffmpeg command (a JSON array of arguments) instead of running it.
    #[arg(long)]
    pub print_command: bool,
    #[command(flatten)]
    pub tools: ToolArgs,
}

/// Validated configuration of a running service.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub queue_url: Option<String>,
    pub reconcile_interval: Duration,
    pub concurrency: usize,
    pub max_upload_bytes: u64,
    pub ladder: Ladder,
    pub chunking: Chunking,
    /// Threads per stage of an encode; `None`: ffmpeg's choice.
    pub encoder_threads: Option<u16>,
    /// No trailing slash. `None`: `http://<bound address>`.
    pub public_base_url: Option<String>,
    pub job_timeout: Duration,
    pub stall_timeout: Duration,
    pub lease: Duration,
    pub poll_interval: Duration,
    pub attempts: u32,
    pub backoff: Duration,
    pub shutdown_grace: Duration,
    pub tools: Tools,
    pub storage: StorageConfig,
    pub access: Access,
    pub limits: Limits,
    pub operations: Operations,
}

/// Metrics, webhooks, alerts and cleanup, validated.
#[derive(Debug, Clone)]
pub struct Operations {
    pub metrics_listen: Option<SocketAddr>,
    pub webhooks: WebhookConfig,
    pub alerts: AlertRules,
    pub clean: CleanPolicy,
}

/// When each alert fires (see `alerts`).
#[derive(Debug, Clone)]
pub struct AlertRules {
    pub interval: Duration,
    pub failure_rate: f64,
    pub window: Duration,
    pub backlog: u64,
    pub oldest_waiting: Duration,
    pub no_worker: Duration,
}

/// What the scheduled cleanup removes, and how often it runs.
#[derive(Debug, Clone)]
pub struct CleanPolicy {
    pub interval: Duration,
    pub completed_after: Duration,
    pub failed_after: Duration,
}

impl Default for Operations {
    fn default() -> Self {
        Operations {
            metrics_listen: None,
            webhooks: WebhookConfig { urls: Vec::new(), key: None, backoff: Duration::from_secs(5) },
            alerts: AlertRules {
                interval: Duration::from_secs(60),
                failure_rate: 0.5,
                window: Duration::from_secs(3600),
                backlog: 50,
                oldest_waiting: Duration::from_secs(1800),
                no_worker: Duration::from_secs(120),
            },
            clean: CleanPolicy {
                interval: Duration::from_secs(3600),
                completed_after: Duration::from_secs(24 * 3600),
                failed_after: Duration::from_secs(7 * 24 * 3600),
            },
        }
    }
}

/// Who may reach the API.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// `--no-auth`: serve without keys whatever the address.
    pub no_auth: bool,
    /// Host names (lower case, no port) the API answers to; empty means the
    /// defaults (see `http::access`).
    pub allowed_hosts: Vec<String>,
    /// `None` in the list: any host.
    pub any_host: bool,
    /// Exact origins (`scheme://host[:port]`) allowed by CORS.
    pub cors_origins: Vec<String>,
    pub trust_forwarded_for: bool,
}

/// How much any caller may ask of the server.
#[derive(Debug, Clone)]
pub struct Limits {
    pub upload_rate: Option<RateLimit>,
    pub max_concurrent_uploads: usize,
    pub max_concurrent_probes: usize,
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub min_free_disk: u64,
    pub source_retention: Duration,
    pub upload_expiry: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            upload_rate: None,
            max_concurrent_uploads: 8,
            max_concurrent_probes: 2,
            max_connections: 1024,
            header_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(30),
            min_free_disk: 1 << 30,
            source_retention: Duration::from_secs(7 * 24 * 3600),
            upload_expiry: Duration::from_secs(24 * 3600),
        }
    }
}

/// `count` events per `per`, e.g. 5 uploads per 15 minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
}

/// The storage backend, validated.
#[derive(Debug, Clone, Default)]
pub enum StorageConfig {
    /// `<data-dir>/media`, served by the API at `/media`.
    #[default]
    Local,
    S3(Box<S3Config>),
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ToolArgs {
    /// The binaries named, checked (see [`Tools::check`]).
    pub fn check(&self) -> Result<Tools, ConfigError> {
        Tools::check(&self.ffmpeg, &self.ffprobe).map_err(|e| ConfigError(e.0))
    }
}

impl Config {
    /// The configuration of `serve`, `api` and `worker`: every value
    /// checked, ffmpeg and ffprobe included.
    pub fn from_args(args: ServiceArgs) -> Result<Config, ConfigError> {
        let tools = args.tools.check()?;
        std::fs::create_dir_all(&args.data_dir).map_err(|e| {
            ConfigError(format!(
                "cannot create data directory {} ({e}); set --data-dir / VIDPIPE_DATA_DIR to a writable directory",
                args.data_dir.display()
            ))
        })?;
        let data_dir = args
            .data_dir
            .canonicalize()
            .map_err(|e| ConfigError(format!("cannot resolve data directory {}: {e}", args.data_dir.display())))?;
        let database_url = database_url(args.database_url, &data_dir)?;
        if args.lease < Duration::from_secs(2) {
            return Err(ConfigError(format!(
                "VIDPIPE_LEASE / --lease is {:?}: use at least 2s, heartbeats renew it every third of it",
                args.lease
            )));
        }
        let storage = StorageConfig::from_args(&args.storage, args.public_base_url.as_deref())?;
        let chunking = Chunking::new(args.chunk_after.0, args.chunk_seconds)
            .map_err(|e| ConfigError(format!("VIDPIPE_CHUNK_SECONDS / --chunk-seconds: {}", e.0)))?;
        Ok(Config {
            chunking,
            encoder_threads: (args.encoder_threads > 0).then_some(args.encoder_threads),
            listen: args.listen,
            data_dir,
            database_url,
            queue_url: args.queue_url,
            reconcile_interval: args.reconcile_interval,
            concurrency: args.concurrency as usize,
            max_upload_bytes: args.max_upload_bytes,
            ladder: args.ladder,
            public_base_url: args.public_base_url,
            job_timeout: args.job_timeout,
            stall_timeout: args.stall_timeout,
            lease: args.lease,
            poll_interval: args.poll_interval,
            attempts: args.attempts,
            backoff: args.backoff,
            shutdown_grace: args.shutdown_grace,
            tools,
            storage,
            access: Access::from_args(&args.security),
            operations: Operations::from_args(&args.operations)?,
            limits: Limits {
                upload_rate: args.security.upload_rate_limit,
                max_concurrent_uploads: args.security.max_concurrent_uploads as usize,
                max_concurrent_probes: args.security.max_concurrent_probes as usize,
                max_connections: args.security.max_connections as usize,
                header_timeout: args.security.header_timeout,
                body_idle_timeout: args.security.body_idle_timeout,
                upload_expiry: args.security.upload_expiry,
                min_free_disk: args.security.min_free_disk,
                source_retention: args.security.source_retention,
            },
        })
    }

    pub fn uploads_dir(&self) -> PathBuf {
        self.data_dir.join("uploads")
    }
    pub fn work_dir(&self) -> PathBuf {
        self.data_dir.join("work")
    }
    pub fn media_dir(&self) -> PathBuf {
        self.data_dir.join("media")
    }
}

fn database_url(given: Option<String>, data_dir: &std::path::Path) -> Result<String, ConfigError> {
    match given {
        Some(url) if url.starts_with("sqlite:") || url.starts_with("postgres:") || url.starts_with("postgresql:") => {
            Ok(url)
        }
        Some(url) => Err(ConfigError(format!(
            "DATABASE_URL `{url}` is not supported: use sqlite://PATH or postgres://USER@HOST/DB"
        ))),
        None => Ok(format!("sqlite://{}", data_dir.join("vidpipe.db").display())),
    }
}

impl Operations {
    fn from_args(args: &OperationsArgs) -> Result<Operations, ConfigError> {
        let key = match args.webhook_secret.as_deref() {
            None => None,
            Some(secret) => Some(
                secret
                    .parse::<SigningKey>()
                    .map_err(|e| ConfigError(format!("VIDPIPE_WEBHOOK_SECRET / --webhook-secret: {e}")))?,
            ),
        };
        if !args.webhook_url.is_empty() && key.is_none() {
            return Err(ConfigError(
                "VIDPIPE_WEBHOOK_URL is set but VIDPIPE_WEBHOOK_SECRET is not: receivers need it to verify each \
                 webhook; make one with `echo whsec_$(openssl rand -base64 32)`"
                    .into(),
            ));
        }
        Ok(Operations {
            metrics_listen: args.metrics_listen,
            webhooks: WebhookConfig { urls: args.webhook_url.clone(), key, backoff: args.webhook_backoff },
            alerts: AlertRules {
                interval: args.alert_interval,
                failure_rate: args.alert_failure_rate,
                window: args.alert_window,
                backlog: args.alert_backlog,
                oldest_waiting: args.alert_oldest_waiting,
                no_worker: args.alert_no_worker,
            },
            clean: CleanPolicy {
                interval: args.clean_interval,
                completed_after: args.clean_completed_after,
                failed_after: args.clean_failed_after,
            },
        })
    }
}

impl Access {
    fn from_args(args: &SecurityArgs) -> Access {
        let hosts: Vec<String> =
            args.allowed_hosts.iter().map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect();
        Access {
            no_auth: args.no_auth,
            any_host: hosts.iter().any(|h| h == "*"),
            allowed_hosts: hosts.into_iter().filter(|h| h != "*").collect(),
            cors_origins: args.cors_origins.clone(),
            trust_forwarded_for: args.trust_forwarded_for,
        }
    }
}

/// SigV4 presigned URLs live at most a week.
const MAX_SIGNED_URL_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

impl StorageConfig {
    fn from_args(args: &StorageArgs, public_base_url: Option<&str>) -> Result<StorageConfig, ConfigError> {
        let Some(url) = args.storage_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) else {
            if args.signed_url_ttl.is_some() {
                return Err(ConfigError(
                    "VIDPIPE_SIGNED_URL_TTL / --signed-url-ttl needs S3 storage: set VIDPIPE_STORAGE_URL=s3://BUCKET/PREFIX, or unset it".into(),
                ));
            }
            return Ok(StorageConfig::Local);
        };
        let Some(rest) = url.strip_prefix("s3://") else {
            return Err(ConfigError(format!(
                "VIDPIPE_STORAGE_URL / --storage-url `{url}` is not supported: use s3://BUCKET/PREFIX, or unset it for the local disk"
            )));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(ConfigError(format!(
                "VIDPIPE_STORAGE_URL `{url}`: `{bucket}` is not a bucket name (3 to 63 lower-case letters, digits, `-` and `.`)"
            )));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|part| part == "." || part == "..") || prefix.contains("//") {
            return Err(ConfigError(format!(
                "VIDPIPE_STORAGE_URL `{url}`: the prefix may not contain `.`, `..` or empty parts"
            )));
        }
        let endpoint = endpoint_url(args.s3_endpoint.as_deref(), "AWS_ENDPOINT_URL / --s3-endpoint")?;
        let public_endpoint =
            endpoint_url(args.s3_public_endpoint.as_deref(), "VIDPIPE_S3_PUBLIC_ENDPOINT / --s3-public-endpoint")?;
        let (access_key_id, secret_access_key) = match (&args.s3_access_key_id, &args.s3_secret_access_key) {
            (Some(id), Some(secret)) => (Some(id.clone()), Some(secret.clone())),
            (None, None) => (None, None),
            (Some(_), None) => {
                return Err(ConfigError(
                    "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not: set both or neither".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError(
                    "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not: set both or neither".into(),
                ))
            }
        };
        if let Some(ttl) = args.signed_url_ttl {
            if ttl > MAX_SIGNED_URL_TTL || ttl < Duration::from_secs(1) {
                return Err(ConfigError(format!(
                    "VIDPIPE_SIGNED_URL_TTL / --signed-url-ttl is {ttl:?}: S3 presigned URLs last from 1s to 7 days"
                )));
            }
        }
        Ok(StorageConfig::S3(Box::new(S3Config {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            endpoint,
            region: args.s3_region.clone(),
            access_key_id,
            secret_access_key,
            virtual_hosted_style: args.s3_virtual_hosted_style,
            public_base_url: public_base_url.map(str::to_string),
            signed_url_ttl: args.signed_url_ttl,
            upload_concurrency: args.upload_concurrency as usize,
            retry_budget: args.s3_retry_budget,
            multipart_threshold: S3Config::DEFAULT_MULTIPART_THRESHOLD,
            cors_origins: args.s3_cors_origins.clone(),
            public_endpoint,
        })))
    }
}

/// A duration, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalDuration(pub Option<Duration>);

fn parse_optional_duration(s: &str) -> Result<OptionalDuration, String> {
    match s.trim() {
        "off" => Ok(OptionalDuration(None)),
        other => parse_duration(other).map(|d| OptionalDuration(Some(d))).map_err(|e| format!("{e}, or off")),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("{e}; write a duration such as 30s, 5m or 2h"))?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

/// An age, where zero ("any age") makes sense.
fn parse_age(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{e}; write an age such as 0s, 12h or 7d"))
}

// The domain's states as command-line values, so `--help` lists them; the
// names are the domain's own (`as_str`), and `domain` stays free of clap.
impl clap::ValueEnum for JobState {
    fn value_variants<'a>() -> &'a [Self] {
        &JobState::ALL
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

impl clap::ValueEnum for ProcessingStatus {
    fn value_variants<'a>() -> &'a [Self] {
        &ProcessingStatus::ALL
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

/// Bytes, with an optional unit: `1048576`, `500MB`, `2GiB`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("`{s}` is not a size; write e.g. 2GiB, 500MB or 1048576"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        other => return Err(format!("unknown unit `{other}`; use B, KB, KiB, MB, MiB, GB or GiB")),
    };
    n.checked_mul(factor).filter(|&b| b > 0).ok_or_else(|| format!("`{s}` must be between 1 byte and 16 EiB"))
}

/// Like [`parse_bytes`], but `0` (off) is allowed.
fn parse_bytes_or_zero(s: &str) -> Result<u64, String> {
    if s.trim() == "0" {
        return Ok(0);
    }
    parse_bytes(s)
}

/// `5/15m`: five per fifteen minutes.
fn parse_rate_limit(s: &str) -> Result<RateLimit, String> {
    let hint = || format!("`{s}` is not a rate; write COUNT/PERIOD such as 5/15m or 100/1h");
    let (count, per) = s.trim().split_once('/').ok_or_else(hint)?;
    let count: u32 = count.trim().parse().ok().filter(|&c| c > 0).ok_or_else(hint)?;
    let per = parse_duration(per).map_err(|_| hint())?;
    Ok(RateLimit { count, per })
}

/// A web origin: `scheme://host[:port]`, nothing after it.
fn parse_origin(s: &str) -> Result<String, String> {
    let s = s.trim().trim_end_matches('/');
    let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains('/') => Ok(s.to_ascii_lowercase()),
        _ => Err(format!("`{s}` is not an origin; write it as https://app.example.com (scheme, host, optional port)")),
    }
}

/// An S3 endpoint setting: unset or empty, or an http(s) URL with no path.
fn endpoint_url(value: Option<&str>, setting: &str) -> Result<Option<String>, ConfigError> {
    let Some(e) = value.map(str::trim).filter(|e| !e.is_empty()) else { return Ok(None) };
    let parsed = object_store::signer::Url::parse(e).ok().filter(|u| {
        matches!(u.scheme(), "http" | "https") && u.host_str().is_some() && u.path().trim_matches('/').is_empty()
    });
    if parsed.is_none() {
        return Err(ConfigError(format!(
            "{setting} `{e}` must be an http(s) URL with no path, such as http://127.0.0.1:9000"
        )));
    }
    Ok(Some(e.trim_end_matches('/').to_string()))
}

/// An origin, or `*` for any.
fn parse_bucket_origin(s: &str) -> Result<String, String> {
    if s.trim() == "*" {
        return Ok("*".into());
    }
    parse_origin(s).map_err(|e| format!("{e}, or `*`"))
}

fn parse_webhook_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    match s.split_once("://") {
        Some(("http" | "https", rest)) if !rest.is_empty() => Ok(s.to_string()),
        _ => Err(format!("`{s}` is not a webhook URL; write an http(s) URL such as https://hooks.example.com/vidpipe")),
    }
}

/// A share from 0 to 1: `0.5`, or `50%`.
fn parse_fraction(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let value = match s.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map(|p| p / 100.0),
        None => s.parse::<f64>(),
    };
    value.ok().filter(|v| (0.0..=1.0).contains(v)).ok_or_else(|| format!("`{s}` is not a share; write 0.5 or 50%"))
}

fn parse_key_name(s: &str) -> Result<KeyName, String> {
    s.parse().map_err(|e: crate::domain::InvalidValue| e.0)
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    s.parse().map_err(|e: crate::domain::InvalidValue| e.0)
}

fn parse_ladder(s: &str) -> Result<Ladder, String> {
    s.parse::<Ladder>().map_err(|e| e.0)
}

fn parse_redis_url(s: &str) -> Result<String, String> {
    if s.starts_with("redis://") || s.starts_with("rediss://") {
        Ok(s.to_string())
    } else {
        Err(format!("`{s}` is not a Redis URL; write redis://HOST:PORT (or rediss:// for TLS)"))
    }
}

fn parse_base_url(s: &str) -> Result<String, String> {
    let trimmed = s.trim().trim_end_matches('/');
    if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) || trimmed.len() <= "https://".len() {
        return Err(format!("`{s}` must be an absolute http(s) URL such as https://cdn.example.com"));
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_bytes("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert!(parse_bytes("lots").unwrap_err().contains("2GiB"));
        assert!(parse_bytes("3 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse_bytes("0").is_err());
    }

    #[test]
    fn durations_and_urls_are_checked() {
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("soon").unwrap_err().contains("30s"));
        assert_eq!(parse_base_url("https://cdn.example.com/").unwrap(), "https://cdn.example.com");
        assert!(parse_base_url("cdn.example.com").is_err());
        assert_eq!(parse_rate_limit("5/15m").unwrap(), RateLimit { count: 5, per: Duration::from_secs(900) });
        assert!(parse_rate_limit("5").unwrap_err().contains("5/15m"));
        assert!(parse_rate_limit("0/1m").is_err());
        assert_eq!(parse_origin("https://App.example.com/").unwrap(), "https://app.example.com");
        assert!(parse_origin("app.example.com").is_err());
        assert!(parse_origin("https://app.example.com/path").is_err());
        assert_eq!(parse_bytes_or_zero("0").unwrap(), 0);
        assert_eq!(parse_fraction("50%").unwrap(), 0.5);
        assert!(parse_fraction("1.5").is_err());
        assert!(parse_webhook_url("ftp://x").is_err());
        assert_eq!(parse_optional_duration("off").unwrap(), OptionalDuration(None));
        assert_eq!(parse_optional_duration("10m").unwrap(), OptionalDuration(Some(Duration::from_secs(600))));
        assert!(parse_optional_duration("soon").unwrap_err().ends_with("or off"));
    }

    fn storage(url: Option<&str>, adjust: impl FnOnce(&mut StorageArgs)) -> Result<StorageConfig, ConfigError> {
        let mut args = StorageArgs {
            storage_url: url.map(str::to_string),
            s3_endpoint: Some("http://127.0.0.1:9000/".into()),
            s3_region: "us-east-1".into(),
            s3_access_key_id: Some("AK".into()),
            s3_secret_access_key: Some("SK".into()),
            s3_virtual_hosted_style: false,
            signed_url_ttl: None,
            upload_concurrency: 8,
            s3_retry_budget: Duration::from_secs(120),
            s3_cors_origins: Vec::new(),
            s3_public_endpoint: None,
        };
        adjust(&mut args);
        StorageConfig::from_args(&args, None)
    }

    #[test]
    fn the_command_line_is_well_formed_and_takes_the_aws_variables() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli =
            Cli::try_parse_from(["vidpipe", "serve", "--storage-url", "s3://media/vod", "--s3-virtual-hosted-style"])
                .unwrap();
        let Command::Serve(args) = cli.command else { panic!("serve") };
        assert_eq!(args.storage.storage_url.as_deref(), Some("s3://media/vod"));
        assert!(args.storage.s3_virtual_hosted_style);
        assert_eq!(args.storage.upload_concurrency, 8);
        let help = Cli::command().find_subcommand_mut("serve").unwrap().render_long_help().to_string();
        assert!(help.contains("AWS_ENDPOINT_URL") && help.contains("VIDPIPE_SIGNED_URL_TTL"), "{help}");
    }

    #[test]
    fn storage_urls_are_checked_and_name_the_variable() {
        assert!(matches!(storage(None, |_| {}).unwrap(), StorageConfig::Local));
        let StorageConfig::S3(s3) = storage(Some("s3://media-bucket/vod/lectures/"), |_| {}).unwrap() else { panic!() };
        assert_eq!((s3.bucket.as_str(), s3.prefix.as_str()), ("media-bucket", "vod/lectures"));
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(!s3.virtual_hosted_style, "path-style by default");
        let err = |url: &str, adjust: fn(&mut StorageArgs)| storage(Some(url), adjust).unwrap_err().0;
        assert!(err("gs://bucket", |_| {}).contains("VIDPIPE_STORAGE_URL"));
        assert!(err("s3://", |_| {}).contains("not a bucket name"));
        assert!(err("s3://bkt/../x", |_| {}).contains("prefix"));
        assert!(err("s3://bucket", |a| a.s3_endpoint = Some("localhost:9000".into())).contains("AWS_ENDPOINT_URL"));
        assert!(err("s3://bucket", |a| a.s3_public_endpoint = Some("cdn.example/x".into()))
            .contains("VIDPIPE_S3_PUBLIC_ENDPOINT / --s3-public-endpoint `cdn.example/x` must be"));
        assert!(err("s3://bucket", |a| a.s3_secret_access_key = None).contains("AWS_SECRET_ACCESS_KEY is not"));
        assert!(err("s3://bucket", |a| a.signed_url_ttl = Some(Duration::from_secs(8 * 86400))).contains("7 days"));
        assert!(storage(None, |a| a.signed_url_ttl = Some(Duration::from_secs(60)))
            .unwrap_err()
            .0
            .contains("needs S3"));
    }

    #[test]
    fn a_binary_that_is_not_ffmpeg_or_lacks_an_encoder_is_named() {
        let ffprobe = PathBuf::from("ffprobe");
        let err = (ToolArgs { ffmpeg: "/bin/true".into(), ffprobe: ffprobe.clone() }).check().unwrap_err();
        assert!(err.0.contains("`/bin/true` is not ffmpeg") && err.0.contains("VIDPIPE_FFMPEG"), "{err}");
        let err = (ToolArgs { ffmpeg: "ffmpeg".into(), ffprobe: "/bin/true".into() }).check().unwrap_err();
        assert!(err.0.contains("is not ffprobe") && err.0.contains("VIDPIPE_FFPROBE"), "{err}");

        // A real ffmpeg whose build lacks libx264 and the split filter.
        let dir = tempfile::tempdir().unwrap();
        let lacking = dir.path().join("ffmpeg-lacking");
        std::fs::write(&lacking, "#!/bin/sh\nffmpeg \"$@\" | grep -v -e ' libx264 ' -e ' split '\n").unwrap();
        std::fs::set_permissions(&lacking, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let err = (ToolArgs { ffmpeg: lacking.clone(), ffprobe: ffprobe.clone() }).check().unwrap_err();
        assert!(err.0.contains("lacks the encoder(s) libx264:") && err.0.contains("ffmpeg version"), "{err}");

        let tools = (ToolArgs { ffmpeg: "ffmpeg".into(), ffprobe }).check().expect("Debian's ffmpeg has it all");
        assert_eq!(tools.ffmpeg, PathBuf::from("ffmpeg"));
    }

    #[test]
    fn state_arguments_list_their_values() {
        let err = Cli::try_parse_from(["vidpipe", "queue", "list", "--state", "stuck"]).unwrap_err().to_string();
        assert!(err.contains("[possible values: waiting, active, delayed, completed, failed, cancelled]"), "{err}");
        let err = Cli::try_parse_from(["vidpipe", "lectures", "list", "--status", "done"]).unwrap_err().to_string();
        assert!(err.contains("[possible values: pending, processing, completed, failed]"), "{err}");
        let Command::Queue { action: QueueAction::List { state, .. }, .. } =
            Cli::try_parse_from(["vidpipe", "queue", "list"]).unwrap().command
        else {
            panic!("queue list")
        };
        assert_eq!(state, JobState::Failed, "the default");
    }

    #[test]
    fn a_missing_ffmpeg_says_how_to_install_it() {
        let err = (ToolArgs { ffmpeg: "/nonexistent/ffmpeg".into(), ffprobe: "ffprobe".into() }).check().unwrap_err();
        assert!(err.0.contains("apt-get install -y ffmpeg"), "{err}");
        assert!(err.0.contains("VIDPIPE_FFMPEG"), "{err}");
    }
}
