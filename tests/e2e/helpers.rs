//! Shared by the end-to-end tests: a real server on port 0 with a fresh data
//! directory, clip generation with ffmpeg's lavfi sources, and ffprobe checks.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use vidpipe::config::{Config, ToolArgs};
use vidpipe::startup::{Application, Role};
use vidpipe::tools::Tools;

/// A client of one vidpipe API.
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
    /// Sent with the reads below, when the API has keys.
    pub key: Option<String>,
}

/// An in-process server on port 0 with its own data directory.
pub struct TestApp {
    pub api: Api,
    pub data_dir: tempfile::TempDir,
    shutdown: CancellationToken,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

pub fn tools() -> Tools {
    (ToolArgs { ffmpeg: "ffmpeg".into(), ffprobe: "ffprobe".into() })
        .check()
        .expect("ffmpeg and ffprobe must be installed (apt-get install -y ffmpeg)")
}

pub fn test_config(data_dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_path_buf(),
        database_url: format!("sqlite://{}", data_dir.join("vidpipe.db").display()),
        queue_url: None,
        reconcile_interval: Duration::from_secs(30),
        concurrency: 1,
        max_upload_bytes: 64 << 20,
        ladder: "240,360,720".parse().unwrap(),
        chunking: vidpipe::transcode::chunks::Chunking::new(None, 60).unwrap(),
        encoder_threads: None,
        public_base_url: None,
        job_timeout: Duration::from_secs(600),
        stall_timeout: Duration::from_secs(60),
        lease: Duration::from_secs(10),
        poll_interval: Duration::from_secs(1),
        attempts: 3,
        backoff: Duration::from_millis(200),
        shutdown_grace: Duration::from_secs(5),
        tools: tools(),
        storage: Default::default(),
        access: Default::default(),
        limits: Default::default(),
        operations: Default::default(),
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    // Logs show with `cargo test -- --nocapture`.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "vidpipe=info".into()),
        )
        .with_test_writer()
        .try_init();
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = test_config(data_dir.path());
    adjust(&mut config);
    let app = Application::build(config, Role::Serve).await.expect("app builds");
    let base = format!("http://{}", app.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let handle = tokio::spawn(async move {
        app.run_until_stopped(stop).await.unwrap();
    });
    TestApp { api: Api::new(base), data_dir, shutdown, handle: Some(handle) }
}

/// Generates a test clip: testsrc2 video (with motion) and, if `audio`, a sine.
pub fn clip(dir: &Path, name: &str, size: &str, rate: &str, seconds: u32, audio: bool) -> PathBuf {
    clip_with_sound(dir, name, size, rate, seconds, audio.then_some(seconds))
}

/// [`clip`] with `sound` seconds of a tone, which may outlast the picture.
pub fn clip_with_sound(dir: &Path, name: &str, size: &str, rate: &str, seconds: u32, sound: Option<u32>) -> PathBuf {
    let out = dir.join(name);
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={size}:rate={rate}:duration={seconds}"));
    if let Some(sound) = sound {
        cmd.args(["-f", "lavfi", "-i"]).arg(format!("sine=frequency=440:sample_rate=44100:duration={sound}"));
        cmd.args(["-c:a", "aac"]);
    }
    cmd.args(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]).arg(&out);
    let status = cmd.status().expect("ffmpeg runs");
    assert!(status.success(), "could not generate {name}");
    out
}

impl std::ops::Deref for TestApp {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl TestApp {
    pub fn uploads_dir(&self) -> PathBuf {
        self.data_dir.path().join("uploads")
    }
}

impl Api {
    pub fn new(base: String) -> Api {
        Api { base, client: reqwest::Client::new(), key: None }
    }

    /// The same API, read with `key`.
    pub fn with_key(&self, key: &str) -> Api {
        Api { base: self.base.clone(), client: self.client.clone(), key: Some(key.to_string()) }
    }

    pub async fn upload_file(&self, path: &Path, course: &str, topic: &str) -> reqwest::Response {
        let bytes = tokio::fs::read(path).await.unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let form = reqwest::multipart::Form::new()
            .text("courseId", course.to_string())
            .text("nameOfTopic", topic.to_string())
            .part("uploadedFile", reqwest::multipart::Part::bytes(bytes).file_name(name));
        self.client.post(format!("{}/api/upload", self.base)).multipart(form).send().await.unwrap()
    }

    /// Uploads and returns the lecture id, asserting the 202 contract.
    pub async fn upload_ok(&self, path: &Path) -> String {
        let response = self.upload_file(path, "course-1", "topic").await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["processingStatus"], "pending");
        assert_eq!(body["lectureId"], body["jobId"]);
        assert!(body["queuePosition"].is_u64(), "{body}");
        body["lectureId"].as_str().unwrap().to_string()
    }

    pub async fn lecture(&self, id: &str) -> Value {
        let request = self.client.get(format!("{}/api/lectures/{id}", self.base));
        let request = match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        };
        request.send().await.unwrap().json().await.unwrap()
    }

    /// Polls until the lecture reaches `status`, failing on any other final one.
    pub async fn wait_for(&self, id: &str, status: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let doc = self.lecture(id).await;
            let now = doc["processingStatus"].as_str().unwrap_or_default().to_string();
            if now == status {
                return doc;
            }
            assert!(now != "completed" && now != "failed", "lecture ended {now}, expected {status}: {doc}");
            assert!(Instant::now() < deadline, "lecture not {status} within {within:?}: {doc}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn job(&self, id: &str) -> Value {
        self.client.get(format!("{}/api/jobs/{id}", self.base)).send().await.unwrap().json().await.unwrap()
    }
}

/// An executable shell script `dir/name` running `body`.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

/// An ffmpeg that runs the shell command `on_encode` in place of the ladder
/// encode, and is the real ffmpeg for everything else (thumbnails, doctor).
pub fn ffmpeg_replacing_the_encode(dir: &Path, on_encode: &str) -> PathBuf {
    script(dir, "fake-ffmpeg", &format!("case \"$*\" in *var_stream_map*) {on_encode};; esac\nexec ffmpeg \"$@\""))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Polls `check` until it holds or the deadline passes.
pub async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not true within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Files under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// What ffprobe sees in one HLS rendition (an index.m3u8 URL).
#[derive(Debug)]
pub struct Probed {
    pub width: u32,
    pub height: u32,
    pub duration: f64,
    pub has_audio: bool,
    /// Codec of the sound, e.g. `aac`. (Through the HLS demuxer ffprobe
    /// does not always know the AAC profile.)
    pub audio: Option<String>,
    pub keyframes: Vec<f64>,
}

/// Async, because the server it reads from runs on the test's runtime.
pub async fn ffprobe_rendition(url: &str) -> Probed {
    let out = tokio::process::Command::new("ffprobe")
        .args(["-v", "error", "-print_format", "json", "-show_format", "-show_streams", url])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "ffprobe {url}: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let streams = v["streams"].as_array().unwrap();
    let video = streams.iter().find(|s| s["codec_type"] == "video").expect("a video stream");
    let keys = tokio::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-skip_frame",
            "nokey",
            "-show_entries",
            "frame=pts_time",
            "-of",
            "csv=p=0",
            url,
        ])
        .output()
        .await
        .unwrap();
    let keyframes = String::from_utf8_lossy(&keys.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse::<f64>().ok())
        .collect();
    Probed {
        width: video["width"].as_u64().unwrap() as u32,
        height: video["height"].as_u64().unwrap() as u32,
        duration: v["format"]["duration"].as_str().unwrap().parse().unwrap(),
        has_audio: streams.iter().any(|s| s["codec_type"] == "audio"),
        audio: streams
            .iter()
            .find(|s| s["codec_type"] == "audio")
            .map(|a| a["codec_name"].as_str().unwrap_or("?").to_string()),
        keyframes,
    }
}

/// `(attributes, uri)` of every variant in a master playlist.
pub fn variants(master: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = master.lines().collect();
    lines
        .windows(2)
        .filter(|w| w[0].starts_with("#EXT-X-STREAM-INF:"))
        .map(|w| (w[0].trim_start_matches("#EXT-X-STREAM-INF:").to_string(), w[1].to_string()))
        .collect()
}

/// A `vidpipe` process started from the built binary, killed when dropped.
pub struct Process {
    pub child: std::process::Child,
}

impl Process {
    pub fn start(role: &str, data_dir: &Path, env: &[(&str, String)]) -> Process {
        let log = std::fs::File::create(data_dir.join(format!("{role}-{}.log", uuid_like()))).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vidpipe"));
        cmd.arg(role).env("VIDPIPE_DATA_DIR", data_dir).stdout(log.try_clone().unwrap()).stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Process { child: cmd.spawn().unwrap() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: sends a signal to our own child.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn uuid_like() -> String {
    format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
}

/// Runs the `vidpipe` binary on `data` and returns (success, stdout, stderr).
pub fn cli(data: &Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vidpipe"))
        .args(args)
        .env("VIDPIPE_DATA_DIR", data)
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn create_key(data: &Path, name: &str, scope: &str) -> String {
    let (ok, stdout, stderr) = cli(data, &["keys", "create", "--name", name, "--scope", scope]);
    assert!(ok, "{stderr}");
    stdout.trim().to_string()
}

/// A `vidpipe serve` process on a free loopback port, and its client.
pub async fn serve(data: &Path, env: &[(&str, String)]) -> (Process, Api) {
    let port = free_port();
    let mut env = env.to_vec();
    env.push(("VIDPIPE_LISTEN", format!("127.0.0.1:{port}")));
    let process = Process::start("serve", data, &env);
    let api = Api::new(format!("http://127.0.0.1:{port}"));
    wait_until_up(&api.client, &api.base).await;
    (process, api)
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until an API at `base` answers its health check.
pub async fn wait_until_up(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{base}/api/health")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{base} did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[path = "../support/postgres.rs"]
mod postgres_support;
pub use postgres_support::fresh_database as postgres_database;

/// A private redis-server on a free port, without persistence, so a restart
/// loses every key (as Redis does when it runs without persistence).
pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl RedisServer {
    pub fn start() -> Option<RedisServer> {
        let mut server = RedisServer { port: free_port(), child: None };
        if !server.restart() {
            if std::env::var_os("CI").is_some() {
                panic!("redis-server is needed in CI (it ships with the machine's Redis)");
            }
            eprintln!("SKIPPED: redis-server not found");
            return None;
        }
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and starts an empty one on the same port.
    pub fn restart(&mut self) -> bool {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let spawned = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn();
        let Ok(child) = spawned else { return false };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
