//! Wiring: builds the stages from a [`Config`] and runs the API, the worker,
//! or both, until a shutdown signal.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::alerts::Alerts;
use crate::config::{Config, ConfigError, StorageConfig, TranscodeArgs};
use crate::db::{Database, Dialect};
use crate::events::webhooks::Webhooks;
use crate::events::EventFeed;
use crate::housekeeping::Housekeeping;
use crate::http::access::{AccessPolicy, AuthMode};
use crate::http::limits::UploadLimits;
use crate::http::server::ServerLimits;
use crate::http::{self, AppState};
use crate::ingest::direct::DirectUploads;
use crate::ingest::resumable::PartialUploads;
use crate::ingest::retention::Retention;
use crate::ingest::{probe, Ingest};
use crate::keys::ApiKeys;
use crate::lectures::LectureStore;
use crate::publish::{LocalStorage, S3Storage, Storage};
use crate::queue::{Backoff, Queue, QueueError, RedisQueue, SqlQueue};
use crate::worker::presence::Presence;

/// Key prefix of vidpipe's Redis queue.
const REDIS_PREFIX: &str = "vidpipe";
use crate::transcode::ffmpeg::Watchdog;
use crate::transcode::plan::Plan;
use crate::transcode::{self, Transcoder};
use crate::worker::{self, RunningJobs, Wake, WorkerContext};

/// Which halves of vidpipe this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// API and worker in one process.
    Serve,
    Api,
    Worker,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open the database ({0}); check DATABASE_URL")]
    Database(#[from] sqlx::Error),
    #[error("cannot use the queue: {0}; check VIDPIPE_QUEUE_URL")]
    Queue(#[from] QueueError),
    #[error("cannot listen on {addr}: {source}; choose another --listen / VIDPIPE_LISTEN")]
    Listen { addr: SocketAddr, source: std::io::Error },
    /// One line that says what is wrong with the storage and what to fix.
    #[error("{0}")]
    Storage(String),
    #[error(
        "vidpipe {0}, and no API key exists. Create one with `vidpipe keys create --name admin --scope admin` \
         (same VIDPIPE_DATA_DIR / DATABASE_URL), or pass --no-auth (VIDPIPE_NO_AUTH=1) to serve without \
         authentication on purpose"
    )]
    NoKeys(String),
    #[error("cannot read the API keys ({0}); check DATABASE_URL")]
    Keys(#[from] crate::keys::KeyError),
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// The stores every role and operator command needs.
pub struct Backends {
    pub db: Database,
    pub queue: Arc<dyn Queue>,
    pub lectures: LectureStore,
}

impl Backends {
    pub async fn connect(config: &Config) -> Result<Backends, StartupError> {
        Backends::open(&config.database_url, config.queue_url.as_deref(), Backoff { base: config.backoff }).await
    }

    /// The database at `database_url`, and the queue in it or at `queue_url`.
    pub async fn open(database_url: &str, queue_url: Option<&str>, backoff: Backoff) -> Result<Backends, StartupError> {
        let db = Database::connect(database_url).await?;
        let lectures = match queue_url {
            Some(url) => {
                LectureStore::apart(db.clone(), Arc::new(RedisQueue::connect(url, REDIS_PREFIX, backoff).await?))
            }
            None => LectureStore::beside(Arc::new(SqlQueue::new(db.clone(), backoff))),
        };
        let queue = lectures.queue();
        Ok(Backends { db, queue, lectures })
    }
}

/// What [`storage`] verifies of an S3 store before handing it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageCheck {
    /// Nothing: operator commands that only read and delete.
    None,
    /// Reachable, credentials accepted, bucket there, writable (list, write,
    /// delete); a problem is one error line that says what to fix.
    Access,
    /// `Access`, then whether browsers can play from the bucket (CORS),
    /// logged as a warning: a worker's start.
    Playback,
    /// `Playback`, after putting the bucket's CORS rule when
    /// `VIDPIPE_S3_CORS_ORIGINS` asks for one: the API's start, so a
    /// deployment writes the rule once per API process, not per worker.
    ConfigurePlayback,
}

/// Where published files go, with links under `public_base_url`, checked
/// as `check` says.
pub async fn storage(
    config: &Config,
    public_base_url: &str,
    check: StorageCheck,
) -> Result<Arc<dyn Storage>, StartupError> {
    match &config.storage {
        StorageConfig::Local => open_storage(&config.storage, config.media_dir(), public_base_url),
        StorageConfig::S3(s3) => {
            let s3 = S3Storage::new(s3.as_ref().clone(), public_base_url)
                .map_err(|e| StartupError::Storage(e.to_string()))?;
            if check != StorageCheck::None {
                s3.check().await.map_err(|e| StartupError::Storage(e.to_string()))?;
                tracing::info!(endpoint = %s3.config().endpoint_display(), bucket = %s3.config().bucket, "publishing to S3");
            }
            if matches!(check, StorageCheck::Playback | StorageCheck::ConfigurePlayback) {
                // A bucket browsers cannot play from is a warning, not a
                // refusal to start: native apps and ffmpeg need no CORS.
                match bucket_playback(config, &s3, check == StorageCheck::ConfigurePlayback).await {
                    Ok(line) => tracing::info!("{line}"),
                    Err(line) => tracing::warn!("{line}"),
                }
            }
            Ok(Arc::new(s3))
        }
    }
}

/// The storage `config` names, unchecked: local files under `media_dir`, or
/// the bucket, with links under `public_base_url`.
pub fn open_storage(
    config: &StorageConfig,
    media_dir: std::path::PathBuf,
    public_base_url: &str,
) -> Result<Arc<dyn Storage>, StartupError> {
    Ok(match config {
        StorageConfig::Local => Arc::new(LocalStorage::new(media_dir, format!("{public_base_url}/media"))),
        StorageConfig::S3(s3) => Arc::new(
            S3Storage::new(s3.as_ref().clone(), public_base_url).map_err(|e| StartupError::Storage(e.to_string()))?,
        ),
    })
}

/// With `apply`, puts the CORS rule on the bucket when
/// `VIDPIPE_S3_CORS_ORIGINS` asks for one; then checks that a browser on the
/// configured origin can fetch from the bucket. `Err` is one line saying
/// what stops browsers and the fix.
pub async fn bucket_playback(config: &Config, s3: &S3Storage, apply: bool) -> Result<String, String> {
    use crate::publish::bucket_cors::{self, Applied};
    let wanted = &s3.config().cors_origins;
    let mut notes = Vec::new();
    if apply && !wanted.is_empty() {
        match bucket_cors::apply(s3, wanted).await {
            Ok(Applied::Set) => {
                notes.push(format!("CORS rule `{}` set for {}", bucket_cors::RULE_ID, wanted.join(", ")))
            }
            Ok(Applied::Unsupported(why)) | Err(why) => {
                notes.push(format!("VIDPIPE_S3_CORS_ORIGINS not applied: {why}"))
            }
        }
    }
    // The origin a real page would send: one the bucket rule names, else
    // one the API allows, else any (a `*` rule allows it).
    let origin = wanted
        .iter()
        .chain(&config.access.cors_origins)
        .find(|o| o.as_str() != "*")
        .map_or(bucket_cors::DEFAULT_CHECK_ORIGIN, String::as_str);
    let checked = bucket_cors::check(s3, origin).await;
    let verdict = match &checked {
        Ok(()) => format!("browsers on {origin} can play from the bucket"),
        Err(problem) => problem.to_string(),
    };
    notes.push(verdict);
    let line = notes.join("; ");
    checked.map(|_| line.clone()).map_err(|_| line)
}

pub struct Application {
    /// Set when workers should LISTEN for new jobs on PostgreSQL.
    notify_url: Option<String>,
    listener: Option<TcpListener>,
    /// `VIDPIPE_METRICS_LISTEN`: `/metrics` alone, keyless.
    metrics_listener: Option<TcpListener>,
    server_limits: ServerLimits,
    state: AppState,
    worker: Option<Arc<WorkerContext>>,
    alerts: Alerts,
    housekeeping: Housekeeping,
    webhooks: Webhooks,
    /// Stops the event feed, which starts in `build`.
    feed_stop: CancellationToken,
}

impl Application {
    pub async fn build(config: Config, role: Role) -> Result<Application, StartupError> {
        let Backends { db, queue, lectures } = Backends::connect(&config).await?;
        let notify_url = (db.dialect == Dialect::Postgres && config.queue_url.is_none() && role != Role::Api)
            .then(|| config.database_url.clone());

        let listener = match role {
            Role::Worker => None,
            Role::Serve | Role::Api => Some(
                TcpListener::bind(config.listen)
                    .await
                    .map_err(|source| StartupError::Listen { addr: config.listen, source })?,
            ),
        };
        // With `--listen 127.0.0.1:0` the port is only known now.
        let public_base_url = match (&config.public_base_url, &listener) {
            (Some(url), _) => url.clone(),
            (None, Some(l)) => format!("http://{}", l.local_addr().map_err(StartupError::Serve)?),
            (None, None) => format!("http://{}", config.listen),
        };
        let keys = ApiKeys::new(db.clone());
        let auth = match &listener {
            None => AuthMode::KeysRequired,
            Some(_) if config.access.no_auth => {
                tracing::warn!("--no-auth: the API is open to anyone who can reach it");
                AuthMode::Open
            }
            Some(l) => {
                let addr = l.local_addr().map_err(StartupError::Serve)?;
                let any_key = keys.any().await?;
                // Loopback behind a reverse proxy is as public as the proxy.
                let exposed_by = if !addr.ip().is_loopback() {
                    Some(format!("listens on {addr}, which is not a loopback address"))
                } else if config.access.trust_forwarded_for {
                    Some("trusts X-Forwarded-For, so it sits behind a proxy".to_string())
                } else if config.public_base_url.as_deref().is_some_and(crate::http::access::names_another_host) {
                    Some("has a VIDPIPE_PUBLIC_BASE_URL on another host, so it is reached through a proxy".to_string())
                } else {
                    None
                };
                if exposed_by.is_none() {
                    if !any_key {
                        tracing::warn!(
                            "no API key exists: the API is open to this machine only; `vidpipe keys create` protects it"
                        );
                    }
                    AuthMode::KeysOnceCreated
                } else if any_key {
                    AuthMode::KeysRequired
                } else {
                    return Err(StartupError::NoKeys(exposed_by.unwrap_or_default()));
                }
            }
        };
        let listen = listener.as_ref().and_then(|l| l.local_addr().ok()).unwrap_or(config.listen);
        let access = Arc::new(AccessPolicy::new(&config.access, auth, listen, &public_base_url));
        // Bad credentials or a missing bucket fail here, not on the first upload.
        let check = if role == Role::Worker { StorageCheck::Playback } else { StorageCheck::ConfigurePlayback };
        let storage = storage(&config, &public_base_url, check).await?;
        let media_root = matches!(config.storage, StorageConfig::Local).then(|| config.media_dir());

        crate::metrics::install();
        let events = lectures.events().clone();
        let presence = Presence::new(db.clone());
        let feed_stop = CancellationToken::new();
        let events_url = (db.dialect == Dialect::Postgres).then(|| config.database_url.clone());
        let feed = EventFeed::start(events.clone(), events_url, feed_stop.clone());
        let metrics_listener = match config.operations.metrics_listen {
            None => None,
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| StartupError::Listen { addr, source })?),
        };

        let running = RunningJobs::default();
        let wake: Wake = Arc::default();
        let worker = (role != Role::Api).then(|| {
            Arc::new(WorkerContext {
                id: worker::worker_id(),
                queue: queue.clone(),
                lectures: lectures.clone(),
                storage: storage.clone(),
                transcoder: Transcoder {
                    tools: config.tools.clone(),
                    watchdog: Watchdog { timeout: config.job_timeout, stall: config.stall_timeout },
                    threads: config.encoder_threads,
                },
                ladder: config.ladder.clone(),
                work_dir: config.work_dir().join(worker::work_dir_name()),
                lease: config.lease,
                poll_interval: config.poll_interval,
                reconcile_interval: config.reconcile_interval,
                max_attempts: config.attempts,
                chunking: config.chunking,
                concurrency: config.concurrency,
                shutdown_grace: config.shutdown_grace,
                running: running.clone(),
                wake: wake.clone(),
                presence: presence.clone(),
            })
        });
        let state = AppState {
            lectures,
            queue,
            storage,
            ingest: Arc::new(Ingest {
                uploads_dir: config.uploads_dir(),
                max_bytes: config.max_upload_bytes,
                ffprobe: config.tools.ffprobe.clone(),
                min_free_disk: config.limits.min_free_disk,
                body_idle_timeout: config.limits.body_idle_timeout,
                probes: Arc::new(Semaphore::new(config.limits.max_concurrent_probes)),
            }),
            max_attempts: config.attempts,
            running,
            wake,
            media_root,
            keys,
            access,
            uploads: UploadLimits::new(config.limits.upload_rate, config.limits.max_concurrent_uploads),
            partial_uploads: PartialUploads::new(
                db.clone(),
                &config.uploads_dir(),
                config.limits.upload_expiry,
                config.limits.body_idle_timeout,
            ),
            // A used URL's row stays while the tus upload it started may run.
            direct_uploads: DirectUploads::new(db.clone(), config.limits.upload_expiry),
            feed,
            presence: presence.clone(),
        };
        let retention = Retention {
            uploads_dir: config.uploads_dir(),
            lectures: state.lectures.clone(),
            failed_source_retention: config.limits.source_retention,
        };
        let server_limits = ServerLimits {
            max_connections: config.limits.max_connections,
            header_timeout: config.limits.header_timeout,
            drain: config.shutdown_grace,
        };
        let holder = worker::worker_id();
        let alerts = Alerts {
            db: db.clone(),
            events: events.clone(),
            queue: state.queue.clone(),
            presence: presence.clone(),
            rules: config.operations.alerts.clone(),
            started_at: crate::domain::now_ms(),
        };
        let housekeeping = Housekeeping {
            db: db.clone(),
            queue: state.queue.clone(),
            lectures: state.lectures.clone(),
            events: events.clone(),
            presence,
            retention,
            partial_uploads: state.partial_uploads.clone(),
            direct_uploads: state.direct_uploads.clone(),
            policy: config.operations.clean.clone(),
            holder: holder.clone(),
        };
        let webhooks = Webhooks { log: events, config: config.operations.webhooks.clone(), holder };
        Ok(Application {
            notify_url,
            listener,
            metrics_listener,
            server_limits,
            state,
            worker,
            alerts,
            housekeeping,
            webhooks,
            feed_stop,
        })
    }

    /// The bound address, if this process serves HTTP.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Runs until `shutdown` is cancelled; then the API stops accepting, the
    /// worker drains (see `worker`), and this returns.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), StartupError> {
        if let Some(url) = self.notify_url {
            tokio::spawn(worker::listen_for_jobs(url, self.state.wake.clone(), shutdown.clone()));
        }
        let worker = self.worker.map(|ctx| tokio::spawn(worker::run(ctx, shutdown.clone())));
        tokio::spawn(self.alerts.run(shutdown.clone()));
        tokio::spawn(self.housekeeping.run(shutdown.clone()));
        tokio::spawn(self.webhooks.run(shutdown.clone()));
        let feed_stop = self.feed_stop.clone();
        let stopping = shutdown.clone();
        tokio::spawn(async move {
            stopping.cancelled().await;
            feed_stop.cancel();
        });
        if let Some(listener) = self.metrics_listener {
            tracing::info!(addr = %listener.local_addr().map_err(StartupError::Serve)?, "serving /metrics");
            let metrics = http::ops::metrics_only(self.state.clone());
            let (limits, stop) = (self.server_limits, shutdown.clone());
            tokio::spawn(async move { http::server::serve(listener, metrics, limits, stop).await });
        }
        if let Some(listener) = self.listener {
            tracing::info!(addr = %listener.local_addr().map_err(StartupError::Serve)?, "listening");
            let app = http::router(self.state).layer(tower_http::trace::TraceLayer::new_for_http());
            http::server::serve(listener, app, self.server_limits, shutdown.clone())
                .await
                .map_err(StartupError::Serve)?;
        }
        if let Some(worker) = worker {
            let _ = worker.await;
        }
        Ok(())
    }
}

/// `vidpipe transcode INPUT --out DIR`: the worker's steps on one file, with
/// progress on stderr.
pub async fn transcode_file(args: TranscodeArgs) -> Result<(), String> {
    let tools = args.tools.check().map_err(|e| e.to_string())?;
    let input = args.input.canonicalize().map_err(|e| format!("{}: {e}", args.input.display()))?;
    let media = probe::probe(&tools.ffprobe, &input).await.map_err(|e| format!("{}: {e}", input.display()))?;
    let plan = Plan::new(&media, &args.ladder);
    if args.print_command {
        let out = std::path::absolute(&args.out).map_err(|e| e.to_string())?;
        let mut argv = vec![tools.ffmpeg.to_string_lossy().into_owned()];
        argv.extend(
            transcode::command::ladder_args(&media, &plan, &input, &out)
                .iter()
                .map(|a| a.to_string_lossy().into_owned()),
        );
        println!("{}", serde_json::to_string(&argv).expect("argv serializes"));
        return Ok(());
    }
    for r in &plan.renditions {
        eprintln!("rendition {}: {}x{}, {} bit/s", r.name(), r.width(), r.height(), r.bandwidth());
    }
    tokio::fs::create_dir_all(&args.out).await.map_err(|e| format!("{}: {e}", args.out.display()))?;
    let transcoder = Transcoder {
        tools,
        watchdog: Watchdog {
            timeout: std::time::Duration::from_secs(24 * 3600),
            stall: std::time::Duration::from_secs(120),
        },
        threads: None,
    };
    let cancel = CancellationToken::new();
    let ctrl_c = cancel.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        ctrl_c.cancel();
    });
    let (progress_tx, progress_rx) = watch::channel(0.0);
    let printer = tokio::spawn(show_progress(progress_rx, media.duration_seconds));
    let result = transcoder.encode(&media, &plan, &input, &args.out, &cancel, &progress_tx).await;
    drop(progress_tx);
    let _ = printer.await;
    result.map_err(|e| e.to_string())?;
    transcode::write_master_and_vod(&plan, &args.out).await.map_err(|e| e.to_string())?;
    eprintln!("done: {}", args.out.join(transcode::command::MASTER_PLAYLIST).display());
    Ok(())
}

/// Shows a transcode's progress (0 to 100) on stderr: a bar with speed and
/// time left on a terminal, otherwise a plain line every 10% so logs stay
/// readable.
async fn show_progress(mut progress: watch::Receiver<f64>, duration_seconds: f64) {
    use std::io::IsTerminal;
    let started = std::time::Instant::now();
    // Seconds of video per second of wall time.
    let speed = |percent: f64| percent / 100.0 * duration_seconds / started.elapsed().as_secs_f64().max(1e-3);
    if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(1000);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {percent:>3}% {msg} {elapsed} elapsed, ETA {eta}")
                .expect("a valid template"),
        );
        while progress.changed().await.is_ok() {
            let percent = *progress.borrow();
            bar.set_position((percent * 10.0) as u64);
            bar.set_message(format!("{:.1}x", speed(percent)));
        }
        bar.finish();
    } else {
        let mut shown = -10.0;
        while progress.changed().await.is_ok() {
            let percent = *progress.borrow();
            if percent - shown >= 10.0 || (percent >= 100.0 && shown < 100.0) {
                shown = percent;
                eprintln!("progress {percent:5.1}% ({:.1}x real time)", speed(percent));
            }
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
