//! A real S3 server for the tests: s3s-fs on a loopback port, with its own
//! directory, that checks SigV4 signatures like AWS does. Tests stop and
//! restart it (same port, same data) to play outages.
//!
//! The binary is `$VIDPIPE_TEST_S3S_FS`, else `~/.cache/vidpipe-ci/bin/s3s-fs`
//! (where `.ci/run` installs it), else `s3s-fs` on the PATH. Without it a
//! test skips loudly, except in CI (`CI` set), where it fails.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::ObjectStore;
use vidpipe::publish::s3::S3Config;

pub const ACCESS_KEY: &str = "AK";
pub const SECRET_KEY: &str = "SK";
pub const BUCKET: &str = "media";

pub struct S3Server {
    binary: PathBuf,
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

fn find_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("VIDPIPE_TEST_S3S_FS") {
        return Some(PathBuf::from(path));
    }
    let cached = PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/vidpipe-ci/bin/s3s-fs");
    if cached.is_file() {
        return Some(cached);
    }
    let on_path = Command::new("s3s-fs").arg("--help").stdout(Stdio::null()).stderr(Stdio::null()).status();
    on_path.is_ok().then(|| PathBuf::from("s3s-fs"))
}

impl S3Server {
    /// Starts a server with one bucket, [`BUCKET`]; `None` (after a loud
    /// message) when s3s-fs is not installed outside CI.
    pub fn start() -> Option<S3Server> {
        let Some(binary) = find_binary() else {
            let help = "s3s-fs not found: install it with `cargo install s3s-fs@0.14.1 --features binary --locked \
                        --root ~/.cache/vidpipe-ci` or set VIDPIPE_TEST_S3S_FS (`.ci/run` does both)";
            assert!(std::env::var_os("CI").is_none(), "{help}");
            eprintln!("\n!!!!!!!! SKIPPED: {help} !!!!!!!!\n");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        // s3s-fs serves each directory under its root as a bucket.
        std::fs::create_dir(dir.path().join(BUCKET)).unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = S3Server { binary, port, dir, child: None };
        server.resume(SECRET_KEY);
        Some(server)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the server, as a crash or a network cut would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data, accepting `secret`.
    pub fn resume(&mut self, secret: &str) {
        self.stop();
        let child = Command::new(&self.binary)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--access-key",
                ACCESS_KEY,
                "--secret-key",
                secret,
            ])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.binary.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not listen on port {} within 10s", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Storage settings for vidpipe against this server.
    pub fn config(&self, prefix: &str) -> S3Config {
        S3Config {
            bucket: BUCKET.into(),
            prefix: prefix.into(),
            endpoint: Some(self.endpoint()),
            region: "us-east-1".into(),
            access_key_id: Some(ACCESS_KEY.into()),
            secret_access_key: Some(SECRET_KEY.into()),
            virtual_hosted_style: false,
            public_base_url: None,
            signed_url_ttl: None,
            upload_concurrency: 8,
            retry_budget: Duration::from_secs(30),
            multipart_threshold: S3Config::DEFAULT_MULTIPART_THRESHOLD,
            cors_origins: Vec::new(),
            public_endpoint: None,
        }
    }

    /// A client of our own, independent of vidpipe's, to look at the bucket.
    pub fn client(&self) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()
            .unwrap()
    }

    /// Every object key in the bucket, sorted.
    pub async fn objects(&self) -> Vec<String> {
        let mut keys: Vec<String> =
            self.client().list(None).map_ok(|m| m.location.to_string()).try_collect().await.expect("list the bucket");
        keys.sort();
        keys
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
