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
use crate::transcode::plan::Ladder;

#[derive(Debug, Parser)]
#[command(name = "vidpipe", version, about = "Upload video, get an HLS ladder: API, durable queue and ffmpeg workers in one binary.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
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
        service: ServiceArgs,
    },
    /// List and delete lectures.
    Lectures {
        #[command(subcommand)]
        action: LecturesAction,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        service: ServiceArgs,
    },
    /// Check ffmpeg, the database, the queue and storage, and run a tiny transcode.
    Doctor {
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        service: ServiceArgs,
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
        #[arg(long, value_parser = parse_job_state, default_value = "failed")]
        state: JobState,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long, default_value_t = 1)]
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
        #[arg(long, value_parser = parse_status)]
        status: Option<ProcessingStatus>,
        #[arg(long)]
        course_id: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Delete one lecture, or every lecture with a status older than a time.
    Delete {
        #[arg(required_unless_present = "status")]
        id: Option<String>,
        #[arg(long, value_parser = parse_status, conflicts_with = "id")]
        status: Option<ProcessingStatus>,
        /// With --status: only lectures created longer ago than this.
        #[arg(long, value_parser = parse_age, default_value = "0s", requires = "status")]
        older_than: Duration,
    },
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

    /// Base of the links the API returns. [default: http://<listen>]
    #[arg(long, env = "VIDPIPE_PUBLIC_BASE_URL", value_parser = parse_base_url)]
    pub public_base_url: Option<String>,

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
}

/// The ffmpeg binaries, checked to exist.
#[derive(Debug, Clone)]
pub struct Tools {
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    pub fn from_args(args: ServiceArgs) -> Result<Config, ConfigError> {
        std::fs::create_dir_all(&args.data_dir).map_err(|e| {
            ConfigError(format!(
                "cannot create data directory {} ({e}); set --data-dir / VIDPIPE_DATA_DIR to a writable directory",
                args.data_dir.display()
            ))
        })?;
        let data_dir = args.data_dir.canonicalize().map_err(|e| {
            ConfigError(format!("cannot resolve data directory {}: {e}", args.data_dir.display()))
        })?;
        let database_url = match args.database_url {
            Some(url) if url.starts_with("sqlite:") || url.starts_with("postgres:") || url.starts_with("postgresql:") => url,
            Some(url) => {
                return Err(ConfigError(format!(
                    "DATABASE_URL `{url}` is not supported: use sqlite://PATH or postgres://USER@HOST/DB"
                )))
            }
            None => format!("sqlite://{}", data_dir.join("vidpipe.db").display()),
        };
        if args.lease < Duration::from_secs(2) {
            return Err(ConfigError(format!(
                "VIDPIPE_LEASE / --lease is {:?}: use at least 2s, heartbeats renew it every third of it",
                args.lease
            )));
        }
        Ok(Config {
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
            tools: Tools::check(&args.tools)?,
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

impl Tools {
    /// Runs `-version` on both binaries so a missing ffmpeg is found at
    /// start-up, not on the first upload.
    pub fn check(args: &ToolArgs) -> Result<Tools, ConfigError> {
        for (path, var) in [(&args.ffmpeg, "VIDPIPE_FFMPEG"), (&args.ffprobe, "VIDPIPE_FFPROBE")] {
            let ran = std::process::Command::new(path)
                .arg("-version")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
            if !matches!(ran, Ok(status) if status.success()) {
                return Err(ConfigError(format!(
                    "`{}` could not be run. Install ffmpeg (Debian/Ubuntu: `apt-get install -y ffmpeg`, macOS: `brew install ffmpeg`) or point {var} at the binary",
                    path.display()
                )));
            }
        }
        Ok(Tools { ffmpeg: args.ffmpeg.clone(), ffprobe: args.ffprobe.clone() })
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e}; write a duration such as 30s, 5m or 2h"))?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

/// An age, where zero ("any age") makes sense.
fn parse_age(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{e}; write an age such as 0s, 12h or 7d"))
}

fn parse_job_state(s: &str) -> Result<JobState, String> {
    s.parse().map_err(|e: crate::domain::InvalidValue| e.0)
}

fn parse_status(s: &str) -> Result<ProcessingStatus, String> {
    s.parse().map_err(|e: crate::domain::InvalidValue| e.0)
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
    n.checked_mul(factor)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("`{s}` must be between 1 byte and 16 EiB"))
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
    }

    #[test]
    fn a_missing_ffmpeg_says_how_to_install_it() {
        let err = Tools::check(&ToolArgs {
            ffmpeg: "/nonexistent/ffmpeg".into(),
            ffprobe: "ffprobe".into(),
        })
        .unwrap_err();
        assert!(err.0.contains("apt-get install -y ffmpeg"), "{err}");
        assert!(err.0.contains("VIDPIPE_FFMPEG"), "{err}");
    }
}
