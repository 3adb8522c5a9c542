//! Safe to put on the internet: keys and scopes, host and origin checks,
//! limits that hold under abuse, untrusted media, and error texts that tell
//! clients nothing about the server. Each test fails without the defence it
//! names.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

fn form(path: &Path) -> reqwest::multipart::Form {
    let bytes = std::fs::read(path).unwrap();
    reqwest::multipart::Form::new()
        .text("courseId", "c1")
        .text("nameOfTopic", "t")
        .part("uploadedFile", reqwest::multipart::Part::bytes(bytes).file_name("v.mp4"))
}

async fn json_error(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status);
    let body: Value = response.json().await.expect("a JSON error");
    assert!(body["error"].is_string() && body["message"].is_string(), "{body}");
    body
}

/// The start of a multipart upload over a raw connection: request headers,
/// the text fields and the file part's headers. The caller sends the rest.
fn raw_upload_head(addr: &str, content_length: Option<u64>) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    let length = match content_length {
        Some(n) => format!("Content-Length: {n}\r\n"),
        None => "Transfer-Encoding: chunked\r\n".into(),
    };
    write!(
        stream,
        "POST /api/upload HTTP/1.1\r\nHost: {addr}\r\nContent-Type: multipart/form-data; boundary=BOUNDARY\r\n{length}\r\n"
    )
    .unwrap();
    stream
}

const FILE_PART_HEAD: &str = "--BOUNDARY\r\nContent-Disposition: form-data; name=\"courseId\"\r\n\r\nc1\r\n\
     --BOUNDARY\r\nContent-Disposition: form-data; name=\"nameOfTopic\"\r\n\r\nt\r\n\
     --BOUNDARY\r\nContent-Disposition: form-data; name=\"uploadedFile\"; filename=\"v.mp4\"\r\n\r\n";

fn status_of(stream: &mut TcpStream) -> Option<u16> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).ok()?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace().nth(1)?.parse().ok()
}

fn incoming(app: &TestApp) -> Vec<std::path::PathBuf> {
    files_under(&app.uploads_dir())
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".incoming-"))
        .collect()
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("{field} in {status}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_scopes_decide_who_may_do_what() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let admin = create_key(data, "ops", "admin");
    let uploader = create_key(data, "lms", "upload");
    assert!(admin.starts_with("vp_") && uploader.starts_with("vp_") && admin != uploader);
    let (_server, api) = serve(data, &[]).await;
    let clip = clip(data, "ok.mp4", "320x240", "30", 2, false);
    let url = |path: &str| format!("{}{path}", api.base);
    let c = &api.client;

    let refused = c.post(url("/api/upload")).multipart(form(&clip)).send().await.unwrap();
    assert_eq!(refused.headers()["www-authenticate"], "Bearer");
    json_error(refused, 401).await;
    let wrong = c.post(url("/api/upload")).bearer_auth("vp_not-a-key").multipart(form(&clip)).send().await.unwrap();
    json_error(wrong, 401).await;

    let accepted = c.post(url("/api/upload")).bearer_auth(&uploader).multipart(form(&clip)).send().await.unwrap();
    assert_eq!(accepted.status(), 202);
    let location = accepted.headers()["location"].to_str().unwrap().to_string();
    let id = accepted.json::<Value>().await.unwrap()["lectureId"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/api/lectures/{id}"));

    assert_eq!(c.get(url(&location)).send().await.unwrap().status(), 401);
    assert_eq!(c.get(url(&location)).bearer_auth(&uploader).send().await.unwrap().status(), 200);
    assert_eq!(c.get(url("/api/jobs?state=waiting")).bearer_auth(&uploader).send().await.unwrap().status(), 200);
    // Destructive and queue-wide actions need admin.
    for (method, path) in [
        (reqwest::Method::DELETE, location.clone()),
        (reqwest::Method::POST, format!("/api/jobs/{id}/cancel")),
        (reqwest::Method::POST, format!("/api/jobs/{id}/retry")),
        (reqwest::Method::POST, "/api/queue/pause".to_string()),
        (reqwest::Method::POST, "/api/queue/resume".to_string()),
        (reqwest::Method::POST, "/api/queue/retry-failed".to_string()),
        (reqwest::Method::POST, "/api/queue/clean".to_string()),
    ] {
        let response = c.request(method.clone(), url(&path)).bearer_auth(&uploader).send().await.unwrap();
        let body = json_error(response, 403).await;
        assert!(body["message"].as_str().unwrap().contains("admin"), "{method} {path}: {body}");
        assert_eq!(c.request(method, url(&path)).send().await.unwrap().status(), 401, "{path} without a key");
    }
    let doc: Value = c.get(url(&location)).bearer_auth(&uploader).send().await.unwrap().json().await.unwrap();
    assert_eq!(doc["_id"], id.as_str(), "the lecture is still there");
    assert_eq!(c.get(url("/metrics")).bearer_auth(&uploader).send().await.unwrap().status(), 403);
    assert_eq!(c.get(url("/metrics")).bearer_auth(&admin).send().await.unwrap().status(), 200);
    let health: Value = c.get(url("/api/health/queue")).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["queue"]["paused"], false, "{health}");

    // Liveness and playback need no key; liveness tells no counts.
    let live: Value = c.get(url("/api/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(live, serde_json::json!({"status": "ok"}));
    let deadline = Instant::now() + Duration::from_secs(60);
    let doc = loop {
        let doc: Value = c.get(url(&location)).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
        if doc["processingStatus"] == "completed" {
            break doc;
        }
        assert!(Instant::now() < deadline && doc["processingStatus"] != "failed", "{doc}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for link in ["videoLink", "thumbnailLink"] {
        let response = c.get(doc[link].as_str().unwrap()).send().await.unwrap();
        assert_eq!(response.status(), 200, "{link} plays without a key");
    }

    let (ok, listed, _) = cli(data, &["keys", "list", "--json"]);
    assert!(ok);
    assert!(!listed.contains(&uploader[3..]) && !listed.contains(&admin[3..]), "no secret in `keys list`");
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let lms = listed.as_array().unwrap().iter().find(|k| k["name"] == "lms").unwrap();
    assert_eq!(lms["scope"], "upload");
    assert!(lms["lastUsedAt"].is_string(), "{lms}");

    // Revoked: refused on the very next request.
    assert!(cli(data, &["keys", "revoke", "lms"]).0);
    let after = c.get(url(&location)).bearer_auth(&uploader).send().await.unwrap();
    json_error(after, 401).await;
    let deleted = c.delete(url(&location)).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(deleted.status(), 200);
    assert!(!cli(data, &["keys", "revoke", "lms"]).0, "revoking an unknown key fails");
}

/// An event stream outlives the request that authorized it, so it is
/// authorized again while it runs: revoking the key that opened it ends it
/// within the recheck interval (5 s), while a stream opened with another key
/// goes on, and the reconnection is refused like any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_key_ends_the_event_streams_it_opened() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let admin = create_key(data, "ops", "admin");
    let uploader = create_key(data, "lms", "upload");
    let (_server, api) = serve(data, &[]).await;
    let clip = &clip(data, "ok.mp4", "320x240", "30", 2, false);
    let (api, c) = (&api, &api.client);
    let upload = |key: String| async move {
        let accepted =
            c.post(format!("{}/api/upload", api.base)).bearer_auth(key).multipart(form(clip)).send().await.unwrap();
        assert_eq!(accepted.status(), 202);
        accepted.json::<Value>().await.unwrap()["lectureId"].as_str().unwrap().to_string()
    };
    let id = upload(uploader.clone()).await;
    let open = |url: String, key: String| async move {
        let response = c.get(url).bearer_auth(key).header("accept", "text/event-stream").send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.bytes_stream()
    };
    let lecture_url = format!("{}/api/lectures/{id}/events", api.base);
    let mut revoked = open(lecture_url.clone(), uploader.clone()).await;
    let mut kept = open(format!("{}/api/events", api.base), admin.clone()).await;
    let first = tokio::time::timeout(Duration::from_secs(10), revoked.next()).await.expect("the snapshot comes");
    assert!(String::from_utf8_lossy(&first.unwrap().unwrap()).contains("lecture.snapshot"));

    // Unrevoked, the stream outlives a recheck.
    let quiet_until = tokio::time::Instant::now() + Duration::from_secs(7);
    while let Ok(chunk) = tokio::time::timeout_at(quiet_until, revoked.next()).await {
        assert!(matches!(chunk, Some(Ok(_))), "the stream ended before its key was revoked");
    }

    assert!(cli(data, &["keys", "revoke", "lms"]).0);
    let revoked_at = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while let Some(Ok(_)) =
        tokio::time::timeout_at(deadline, revoked.next()).await.expect("the stream ends after revocation")
    {}
    eprintln!("stream ended {:?} after the revocation", revoked_at.elapsed());
    let again = c.get(&lecture_url).bearer_auth(&uploader).send().await.unwrap();
    json_error(again, 401).await;

    // The admin's stream is still open and still delivers.
    let later = upload(admin.clone()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut seen = String::new();
    while !seen.contains(&later) {
        let chunk = tokio::time::timeout_at(deadline, kept.next()).await.expect("the admin's stream delivers");
        seen.push_str(&String::from_utf8_lossy(&chunk.expect("the admin's stream is open").unwrap()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_address_without_keys_is_refused_unless_no_auth_is_explicit() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let port = free_port();
    let run = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_vidpipe"));
        cmd.args(["api", "--listen", &format!("0.0.0.0:{port}")]).args(extra).env("VIDPIPE_DATA_DIR", data);
        cmd
    };
    let mut refused = run(&[]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = refused.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = refused.kill();
            panic!("vidpipe started on 0.0.0.0 with no key");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    let mut stderr = String::new();
    refused.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(stderr.contains("vidpipe keys create") && stderr.contains("--no-auth"), "{stderr}");
    // On loopback, but behind a proxy (the README's setup): just as exposed.
    for proxied in [&["--trust-forwarded-for"][..], &["--public-base-url", "https://video.example.com"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vidpipe"))
            .args(["api", "--listen", &format!("127.0.0.1:{port}")])
            .args(proxied)
            .env("VIDPIPE_DATA_DIR", data)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{proxied:?} started without keys");
        assert!(String::from_utf8_lossy(&out.stderr).contains("proxy"), "{}", String::from_utf8_lossy(&out.stderr));
    }

    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let open = Process { child: run(&["--no-auth"]).stderr(std::process::Stdio::null()).spawn().unwrap() };
    wait_until_up(&client, &base).await;
    let jobs = client.get(format!("{base}/api/lectures")).send().await.unwrap();
    assert_eq!(jobs.status(), 200, "--no-auth serves without keys");
    drop(open);

    let admin = create_key(data, "ops", "admin");
    let keyed = Process { child: run(&[]).stderr(std::process::Stdio::null()).spawn().unwrap() };
    wait_until_up(&client, &base).await;
    assert_eq!(client.get(format!("{base}/api/lectures")).send().await.unwrap().status(), 401);
    assert_eq!(client.get(format!("{base}/api/lectures")).bearer_auth(&admin).send().await.unwrap().status(), 200);
    drop(keyed);
}

#[tokio::test]
async fn a_foreign_host_or_a_cross_site_form_is_refused() {
    let app = spawn_app().await;
    let url = format!("{}/api/queue/pause", app.base);
    let response = app.client.post(&url).header("host", "rebound.evil.example").send().await.unwrap();
    let body = json_error(response, 400).await;
    assert!(body["message"].as_str().unwrap().contains("VIDPIPE_ALLOWED_HOSTS"), "{body}");
    let port = app.base.rsplit(':').next().unwrap();
    let response = app.client.get(format!("{}/api/health", app.base)).header("host", format!("localhost:{port}"));
    assert_eq!(response.send().await.unwrap().status(), 200, "localhost is one of ours");

    // What a page on another site can make a browser send: a form POST.
    for headers in [[("origin", "https://evil.example")], [("sec-fetch-site", "cross-site")]] {
        let mut request = app.client.post(&url).header("content-type", "application/x-www-form-urlencoded");
        for (k, v) in headers {
            request = request.header(k, v);
        }
        json_error(request.body("x=1").send().await.unwrap(), 403).await;
        let dir = tempfile::tempdir().unwrap();
        let clip = clip(dir.path(), "v.mp4", "320x240", "30", 1, false);
        let mut upload = app.client.post(format!("{}/api/upload", app.base)).multipart(form(&clip));
        for (k, v) in headers {
            upload = upload.header(k, v);
        }
        json_error(upload.send().await.unwrap(), 403).await;
    }
    let health: Value =
        app.client.get(format!("{}/api/health/queue", app.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["queue"]["paused"], false, "{health}");
    let list: Value = app.client.get(format!("{}/api/lectures", app.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["total"], 0);
    // The same request from the API's own origin goes through.
    let same = app.client.post(&url).header("origin", &app.base).send().await.unwrap();
    assert_eq!(same.status(), 200);
}

#[tokio::test]
async fn cors_is_off_by_default_and_allows_only_configured_origins() {
    let closed = spawn_app().await;
    let response =
        closed.client.get(format!("{}/api/lectures", closed.base)).header("origin", "https://app.example.com");
    let response = response.send().await.unwrap();
    assert!(response.headers().get("access-control-allow-origin").is_none());

    let app = spawn_app_with(|c| c.access.cors_origins = vec!["https://app.example.com".into()]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, format!("{}/api/upload", app.base))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example.com");
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // A tus client in the page: PATCH with the tus headers, and the answer
    // headers it must read.
    let tus = app
        .client
        .request(reqwest::Method::OPTIONS, format!("{}/api/uploads/0123456789abcdef0123456789abcdef", app.base))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "PATCH")
        .header("access-control-request-headers", "tus-resumable,upload-offset,content-type,authorization")
        .send()
        .await
        .unwrap();
    let allows = |name: &str| tus.headers()[name].to_str().unwrap().to_ascii_lowercase();
    assert!(allows("access-control-allow-methods").contains("patch"), "{:?}", tus.headers());
    assert!(allows("access-control-allow-headers").contains("upload-offset"), "{:?}", tus.headers());
    let created = app
        .client
        .post(format!("{}/api/uploads", app.base))
        .header("origin", "https://app.example.com")
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "10")
        .header("upload-metadata", "courseId YzE=,nameOfTopic dA==")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let exposed = created.headers()["access-control-expose-headers"].to_str().unwrap().to_ascii_lowercase();
    for header in ["location", "upload-offset", "tus-resumable", "vidpipe-lecture-id"] {
        assert!(exposed.contains(header), "{header} is not exposed: {exposed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_header_that_never_ends_costs_no_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (server, api) = serve(dir.path(), &[]).await;
    let pid = server.pid();
    let addr = api.base.trim_start_matches("http://").to_string();
    let idle_rss = proc_status_kib(pid, "VmRSS:");

    let sent = tokio::task::spawn_blocking(move || {
        let mut stream = raw_upload_head(&addr, None);
        let head = b"--BOUNDARY\r\nContent-Disposition: form-data; name=\"uploadedFile\"; filename=\"";
        write!(stream, "{:x}\r\n", head.len()).unwrap();
        stream.write_all(head).unwrap();
        stream.write_all(b"\r\n").unwrap();
        let chunk = vec![b'a'; 1 << 20];
        let mut sent = 0usize;
        // 256 MiB of header bytes and no blank line, unless the server hangs up first.
        while sent < 256 << 20 {
            let ok = write!(stream, "{:x}\r\n", chunk.len()).is_ok() && stream.write_all(&chunk).is_ok();
            if !ok || stream.write_all(b"\r\n").is_err() {
                break;
            }
            sent += chunk.len();
        }
        (sent, status_of(&mut stream))
    })
    .await
    .unwrap();
    let peak = proc_status_kib(pid, "VmHWM:");
    eprintln!("header bomb: sent {} MiB, idle RSS {idle_rss} KiB, peak {peak} KiB", sent.0 >> 20);
    assert!(peak < idle_rss + 16 * 1024, "peak RSS {peak} KiB against {idle_rss} KiB idle");
    assert!(sent.0 < 256 << 20, "the server stopped reading: sent {} bytes", sent.0);
}

#[tokio::test]
async fn forms_with_long_file_names_or_two_files_are_refused() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let clip = clip(dir.path(), "v.mp4", "320x240", "30", 1, false);
    let bytes = std::fs::read(&clip).unwrap();
    let upload =
        |form: reqwest::multipart::Form| app.client.post(format!("{}/api/upload", app.base)).multipart(form).send();
    let with_name = |name: String| {
        reqwest::multipart::Form::new()
            .text("courseId", "c")
            .text("nameOfTopic", "t")
            .part("uploadedFile", reqwest::multipart::Part::bytes(bytes.clone()).file_name(name))
    };
    let body = json_error(upload(with_name("a".repeat(1 << 20))).await.unwrap(), 400).await;
    assert!(body["message"].as_str().unwrap().contains("headers are longer"), "{body}");
    let body = json_error(upload(with_name(format!("{}.mp4", "a".repeat(300)))).await.unwrap(), 400).await;
    assert!(body["message"].as_str().unwrap().contains("255 bytes"), "{body}");
    let two = with_name("a.mp4".into())
        .part("uploadedFile", reqwest::multipart::Part::bytes(bytes.clone()).file_name("b.mp4"));
    let body = json_error(upload(two).await.unwrap(), 400).await;
    assert!(body["message"].as_str().unwrap().contains("one file"), "{body}");
    let smuggled =
        with_name("a.mp4".into()).part("attachment", reqwest::multipart::Part::bytes(bytes.clone()).file_name("b.mp4"));
    json_error(upload(smuggled).await.unwrap(), 400).await;
    assert_eq!(upload(with_name("ok.mp4".into())).await.unwrap().status(), 202, "the same form with one file is fine");
    let list: Value = app.client.get(format!("{}/api/lectures", app.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["total"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_past_the_cap_get_a_fast_503_and_stalled_ones_are_dropped() {
    let app = spawn_app_with(|c| {
        c.limits.max_concurrent_uploads = 2;
        c.limits.body_idle_timeout = Duration::from_secs(2);
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_string();
    // Two uploads that send a little and then stall.
    let mut stalled: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = raw_upload_head(&addr, Some(50 << 20));
            s.write_all(FILE_PART_HEAD.as_bytes()).unwrap();
            s.write_all(&vec![0u8; 64 * 1024]).unwrap();
            s
        })
        .collect();
    eventually("both uploads are spooling", Duration::from_secs(10), || incoming(&app).len() == 2).await;

    let dir = tempfile::tempdir().unwrap();
    let clip = clip(dir.path(), "v.mp4", "320x240", "30", 1, false);
    let started = Instant::now();
    let third = app.upload_file(&clip, "c", "t").await;
    assert!(started.elapsed() < Duration::from_secs(1), "answered at once: {:?}", started.elapsed());
    assert!(third.headers().get("retry-after").is_some());
    json_error(third, 503).await;

    // Nothing more arrives: each stalled upload is answered 408 and closed,
    // and its spooled file removed.
    for stream in &mut stalled {
        assert_eq!(status_of(stream), Some(408));
    }
    eventually("stalled spool files removed", Duration::from_secs(5), || incoming(&app).is_empty()).await;
    assert_eq!(app.upload_file(&clip, "c", "t").await.status(), 202, "the slots are free again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_never_hold_up_a_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("VIDPIPE_SHUTDOWN_GRACE", "1s".to_string()),
        ("VIDPIPE_BODY_IDLE_TIMEOUT", "120s".to_string()),
        ("VIDPIPE_HEADER_TIMEOUT", "1s".to_string()),
    ];
    let (mut server, api) = serve(dir.path(), &env).await;
    let addr = api.base.trim_start_matches("http://").to_string();
    // Half a request line: closed after the header timeout.
    let mut slow_headers = TcpStream::connect(&addr).unwrap();
    slow_headers.write_all(b"GET /api/health HTTP/1.1\r\nHost: ").unwrap();
    let started = Instant::now();
    slow_headers.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 256];
    let _ = slow_headers.read(&mut buf);
    assert!(started.elapsed() < Duration::from_secs(5), "header timeout: {:?}", started.elapsed());

    let mut upload = raw_upload_head(&addr, Some(50 << 20));
    upload.write_all(FILE_PART_HEAD.as_bytes()).unwrap();
    upload.write_all(&[0u8; 4096]).unwrap();
    let spool = dir.path().join("uploads");
    eventually("the upload is spooling", Duration::from_secs(10), || !files_under(&spool).is_empty()).await;
    server.signal(libc::SIGTERM);
    let stopping = Instant::now();
    loop {
        if server.child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(stopping.elapsed() < Duration::from_secs(10), "shutdown held up by a stalled upload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(files_under(&spool).is_empty(), "the dropped upload left {:?}", files_under(&spool));
}

#[tokio::test]
async fn rate_limits_count_per_client_and_say_when_to_come_back() {
    let app = spawn_app_with(|c| {
        c.limits.upload_rate = Some(vidpipe::config::RateLimit { count: 2, per: Duration::from_secs(3600) });
        c.access.trust_forwarded_for = true;
        // Behind a proxy vidpipe wants keys; this test is about rates.
        c.access.no_auth = true;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let clip = clip(dir.path(), "v.mp4", "320x240", "30", 1, false);
    let from = |ip: &'static str| {
        app.client.post(format!("{}/api/upload", app.base)).header("x-forwarded-for", ip).multipart(form(&clip)).send()
    };
    assert_eq!(from("203.0.113.1").await.unwrap().status(), 202);
    assert_eq!(from("203.0.113.1").await.unwrap().status(), 202);
    let third = from("203.0.113.1").await.unwrap();
    let wait: u64 = third.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1700..=1800).contains(&wait), "one upload comes back every 30 min: {wait}");
    json_error(third, 429).await;
    assert_eq!(from("203.0.113.2").await.unwrap().status(), 202, "another client has its own allowance");
    // A client may send its own X-Forwarded-For; the proxy appends the real
    // address last, and that is the one counted.
    let spoofed = from("198.51.100.7, 203.0.113.1").await.unwrap();
    assert_eq!(spoofed.status(), 429, "a forged first entry does not buy a new allowance");
}

#[tokio::test]
async fn uploads_are_refused_when_the_disk_is_nearly_full() {
    let app = spawn_app_with(|c| c.limits.min_free_disk = 1 << 60).await;
    let dir = tempfile::tempdir().unwrap();
    let clip = clip(dir.path(), "v.mp4", "320x240", "30", 1, false);
    let body = json_error(app.upload_file(&clip, "c", "t").await, 507).await;
    assert!(body["message"].as_str().unwrap().contains("disk"), "{body}");
    assert!(files_under(&app.uploads_dir()).is_empty());
}

/// A chunked upload declares no size, so the disk is checked again while it
/// is written: the floor sits 96 MiB under today's free space, and the
/// upload would write 400 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_fills_the_disk_is_stopped_while_it_is_written() {
    let probe_dir = tempfile::tempdir().unwrap();
    let free = vidpipe::ingest::free_space(probe_dir.path()).unwrap();
    let app = spawn_app_with(|c| {
        c.max_upload_bytes = 512 << 20;
        c.limits.min_free_disk = free - (96 << 20);
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_string();
    // Watches the spool file grow, beside the client.
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (uploads, watching) = (app.uploads_dir(), watching.clone());
        std::thread::spawn(move || {
            let mut biggest = 0u64;
            while watching.load(std::sync::atomic::Ordering::SeqCst) {
                let sizes = files_under(&uploads).iter().map(|f| std::fs::metadata(f).map_or(0, |m| m.len())).max();
                biggest = biggest.max(sizes.unwrap_or(0));
                std::thread::sleep(Duration::from_millis(2));
            }
            biggest
        })
    };
    let status = tokio::task::spawn_blocking(move || {
        let mut stream = raw_upload_head(&addr, None);
        let mut send = |bytes: &[u8]| -> bool {
            write!(stream, "{:x}\r\n", bytes.len()).is_ok()
                && stream.write_all(bytes).is_ok()
                && stream.write_all(b"\r\n").is_ok()
        };
        assert!(send(FILE_PART_HEAD.as_bytes()));
        let chunk = vec![0u8; 1 << 20];
        let mut sent = 0u64;
        while sent < 400 << 20 && send(&chunk) {
            sent += chunk.len() as u64;
        }
        status_of(&mut stream)
    })
    .await
    .unwrap();
    watching.store(false, std::sync::atomic::Ordering::SeqCst);
    let spooled = watcher.join().unwrap();
    assert!(spooled > 16 << 20, "the upload was being written before it was stopped ({spooled} bytes, {status:?})");
    assert_eq!(status, Some(507));
    let gone = || files_under(&app.uploads_dir()).is_empty();
    eventually("the partial upload is removed", Duration::from_secs(5), gone).await;
}

/// Matroska's Segment Info Duration: EBML id 0x4489, size 0x88, then an
/// 8-byte float in milliseconds. Patched, ffprobe believes the new value.
fn patch_mkv_duration(path: &Path, ms: f64) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes.windows(3).position(|w| w == [0x44, 0x89, 0x88]).expect("a Duration element");
    bytes[at + 3..at + 11].copy_from_slice(&ms.to_be_bytes());
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn a_container_that_lies_about_its_duration_does_not_buy_more_work() {
    let app = spawn_app_with(|c| c.ladder = "240".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("liar.mkv");
    let made = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=20"])
        .args(["-c:v", "libx264", "-preset", "ultrafast"])
        .arg(&source)
        .status()
        .unwrap();
    assert!(made.success());
    patch_mkv_duration(&source, 1000.0);
    let id = app.upload_ok(&source).await;
    let doc = app.wait_for(&id, "completed", Duration::from_secs(60)).await;
    let master = reqwest::get(doc["videoLink"].as_str().unwrap()).await.unwrap().text().await.unwrap();
    let (_, uri) = &variants(&master)[0];
    let base = doc["videoLink"].as_str().unwrap().trim_end_matches("master.m3u8");
    let probed = ffprobe_rendition(&format!("{base}{uri}")).await;
    assert!(probed.duration < 4.0, "encoded {:.1} s of a file that claims 1 s", probed.duration);
}

#[tokio::test]
async fn an_anamorphic_file_too_wide_to_decode_is_refused() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("wide.mkv");
    // 8320 pixels stored, 2080 displayed (pixels a quarter as wide as tall).
    let made = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i", "testsrc2=size=8320x32:rate=25:duration=1", "-vf", "setsar=1/4"])
        .args(["-c:v", "libx264", "-preset", "ultrafast"])
        .arg(&source)
        .status()
        .unwrap();
    assert!(made.success());
    let body = json_error(app.upload_file(&source, "c", "t").await, 422).await;
    assert!(body["message"].as_str().unwrap().contains("8320x32"), "{body}");
    assert!(files_under(&app.uploads_dir()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_and_ffprobe_run_without_our_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let recorder = |tool: &str| {
        let log = data.join(format!("{tool}.env"));
        let script =
            script(data, &format!("recording-{tool}"), &format!("env >> '{}'\nexec {tool} \"$@\"", log.display()));
        (script, log)
    };
    let (ffmpeg, ffmpeg_env) = recorder("ffmpeg");
    let (ffprobe, ffprobe_env) = recorder("ffprobe");
    let env = [
        ("VIDPIPE_FFMPEG", ffmpeg.display().to_string()),
        ("VIDPIPE_FFPROBE", ffprobe.display().to_string()),
        ("DATABASE_URL", format!("sqlite://{}", data.join("vidpipe.db").display())),
        ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-secret".to_string()),
        ("AWS_ACCESS_KEY_ID", "AKIA-secret".to_string()),
    ];
    let (_server, api) = serve(data, &env).await;
    let clip = clip(data, "v.mp4", "320x240", "30", 1, false);
    let id = api.upload_ok(&clip).await;
    api.wait_for(&id, "completed", Duration::from_secs(60)).await;
    for log in [ffmpeg_env, ffprobe_env] {
        let seen = std::fs::read_to_string(&log).unwrap();
        assert!(seen.contains("PATH="), "{seen}");
        for secret in ["wJalrXUtnFEMI", "AKIA", "DATABASE_URL", "AWS_", "VIDPIPE_"] {
            assert!(!seen.contains(secret), "{} saw `{secret}`:\n{seen}", log.display());
        }
    }
}

/// Runs the repository's hostile-corpus generator into `out`.
fn corpus(out: &Path, secret: &Path) -> Vec<(String, String)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile/make_corpus.py");
    let made = std::process::Command::new("python3").arg(script).arg(out).arg(secret).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let manifest: Value = serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    manifest
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["file"].as_str().unwrap().to_string(), m["what"].as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decode_error_fails_after_one_attempt_and_clients_see_no_server_paths() {
    let app = spawn_app_with(|c| {
        c.attempts = 3;
        c.backoff = Duration::from_millis(100);
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path(), &dir.path().join("secret.ts"));
    let id = app.upload_ok(&dir.path().join("corrupt_after_start.mkv")).await;
    let doc = app.wait_for(&id, "failed", Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let job = app.job(&id).await;
    assert_eq!((job["state"].as_str(), job["attempts"].as_u64()), (Some("failed"), Some(1)), "{job}");

    // ffmpeg's message names our work directory; clients never see it.
    let data = app.data_dir.path().display().to_string();
    let shown = format!("{doc} {job}");
    assert!(!shown.contains(&data) && !shown.contains(" @ 0x"), "{shown}");
    let (ok, listed, _) = cli(app.data_dir.path(), &["queue", "list", "--state", "failed", "--json"]);
    assert!(ok && listed.contains("ffmpeg failed"), "operators get the whole text: {listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_document_names_no_server_path() {
    let dir = tempfile::tempdir().unwrap();
    // An encoder failure whose message quotes its arguments, paths included.
    let broken = ffmpeg_replacing_the_encode(dir.path(), "echo \"cannot write $*\" >&2; exit 1");
    let app = spawn_app_with(|c| {
        c.tools.ffmpeg = broken.clone();
        c.attempts = 1;
    })
    .await;
    let clip = clip(dir.path(), "v.mp4", "320x240", "30", 1, false);
    let id = app.upload_ok(&clip).await;
    let doc = app.wait_for(&id, "failed", Duration::from_secs(60)).await;
    let job = app.job(&id).await;
    let data = app.data_dir.path().display().to_string();
    let (_, listed, _) = cli(app.data_dir.path(), &["queue", "list", "--state", "failed", "--json"]);
    assert!(listed.contains(&data), "the stored error did name the data dir: {listed}");
    for shown in [&doc, &job] {
        assert!(!shown.to_string().contains(&data), "{shown}");
    }
    assert!(doc["processingError"].as_str().unwrap().contains("<path>"), "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sources_are_removed_after_the_retention_period() {
    let dir = tempfile::tempdir().unwrap();
    let broken = ffmpeg_replacing_the_encode(dir.path(), "echo 'bad input' >&2; exit 1");
    let app = spawn_app_with(|c| {
        c.tools.ffmpeg = broken.clone();
        c.attempts = 1;
        c.limits.source_retention = Duration::from_secs(2);
    })
    .await;
    let clip = clip(dir.path(), "v.mp4", "320x240", "30", 1, false);
    let id = app.upload_ok(&clip).await;
    app.wait_for(&id, "failed", Duration::from_secs(60)).await;
    let source = || files_under(&app.uploads_dir()).into_iter().find(|p| p.to_string_lossy().contains(&id));
    assert!(source().is_some(), "kept for a retry at first");
    eventually("source removed after the retention", Duration::from_secs(10), || source().is_none()).await;
    let retry = app.client.post(format!("{}/api/jobs/{id}/retry", app.base)).send().await.unwrap();
    let body = json_error(retry, 409).await;
    assert!(body["message"].as_str().unwrap().contains("upload the video again"), "{body}");
    let all = app.client.post(format!("{}/api/queue/retry-failed", app.base)).send().await.unwrap();
    let all: Value = all.json().await.unwrap();
    assert_eq!(all, serde_json::json!({"retried": [], "sourceGone": [id]}), "retry-all names what it left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failed_job_is_retried_at_once_and_old_records_cleaned_while_lectures_keep_their_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let broken = ffmpeg_replacing_the_encode(dir.path(), "echo 'bad input' >&2; exit 1");
    let app = spawn_app_with(|c| {
        c.tools.ffmpeg = broken.clone();
        c.attempts = 1;
    })
    .await;
    let clip = clip(dir.path(), "v.mp4", "320x240", "30", 1, false);
    let mut ids = vec![app.upload_ok(&clip).await, app.upload_ok(&clip).await];
    ids.sort();
    let mut before = Vec::new();
    for id in &ids {
        app.wait_for(id, "failed", Duration::from_secs(60)).await;
        before.push(app.job(id).await);
    }
    assert!(before.iter().all(|job| job["finishedAt"].is_string()), "{before:?}");
    let post = |path: &str| app.client.post(format!("{}{path}", app.base));
    let all: Value = post("/api/queue/retry-failed").send().await.unwrap().json().await.unwrap();
    let mut retried: Vec<String> =
        all["retried"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    retried.sort();
    assert_eq!(retried, ids, "both ran again: {all}");
    // Each runs and fails again, as the broken encoder makes it.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for (id, before) in ids.iter().zip(&before) {
        loop {
            let job = app.job(id).await;
            if job["state"] == "failed" && job["finishedAt"] != before["finishedAt"] {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{id} did not run again: {job}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let refused = post("/api/queue/clean").json(&serde_json::json!({"failedOlderThan": -1})).send().await.unwrap();
    let body = json_error(refused, 400).await;
    assert!(body["message"].as_str().unwrap().contains("failedOlderThan"), "{body}");
    let refused = post("/api/queue/clean").json(&serde_json::json!([1, 2])).send().await.unwrap();
    let body = json_error(refused, 400).await;
    assert!(body["message"].as_str().unwrap().contains("send a JSON object"), "{body}");
    // A week's default keeps these minutes-old records.
    let kept: Value = post("/api/queue/clean").json(&serde_json::json!({})).send().await.unwrap().json().await.unwrap();
    assert_eq!(kept, serde_json::json!({"completed": 0, "failed": 0}));
    let cleaned: Value = post("/api/queue/clean")
        .json(&serde_json::json!({"failedOlderThan": 0}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cleaned["failed"], 2, "{cleaned}");
    for id in &ids {
        assert_eq!(app.client.get(format!("{}/api/jobs/{id}", app.base)).send().await.unwrap().status(), 404);
        let doc: Value =
            app.client.get(format!("{}/api/lectures/{id}", app.base)).send().await.unwrap().json().await.unwrap();
        assert_eq!(doc["processingStatus"], "failed", "the lecture keeps its outcome: {doc}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_whose_client_hangs_up_after_sending_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    // A slow probe: the client is long gone when the lecture is committed.
    let slow = script(dir.path(), "slow-ffprobe", "sleep 1\nexec ffprobe \"$@\"");
    let app = spawn_app_with(|c| c.tools.ffprobe = slow.clone()).await;
    let clip = std::fs::read(clip(dir.path(), "v.mp4", "320x240", "30", 1, false)).unwrap();
    let addr = app.base.trim_start_matches("http://").to_string();
    let tail = b"\r\n--BOUNDARY--\r\n";
    let mut stream = raw_upload_head(&addr, Some((FILE_PART_HEAD.len() + clip.len() + tail.len()) as u64));
    stream.write_all(FILE_PART_HEAD.as_bytes()).unwrap();
    stream.write_all(&clip).unwrap();
    stream.write_all(tail).unwrap();
    eventually("spooled", Duration::from_secs(10), || !files_under(&app.uploads_dir()).is_empty()).await;
    drop(stream);

    let lectures = || async {
        let list: Value =
            app.client.get(format!("{}/api/lectures", app.base)).send().await.unwrap().json().await.unwrap();
        list["lectures"].as_array().unwrap().clone()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while lectures().await.is_empty() {
        assert!(Instant::now() < deadline, "the upload was lost with its connection");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id = lectures().await[0]["_id"].as_str().unwrap().to_string();
    app.wait_for(&id, "completed", Duration::from_secs(60)).await;
}

/// Every file of the hostile corpus gets a 4xx with a message, or fails or
/// completes cleanly; and nothing opens the local file the corpus points at
/// (a FIFO: opening it would be seen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hostile_corpus_is_refused_or_handled_and_reads_nothing_outside_the_upload() {
    let app = spawn_app_with(|c| c.ladder = "240".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret.ts");
    let files = corpus(&dir.path().join("corpus"), &secret);
    assert!(files.len() >= 14, "{files:?}");
    let fifo = std::ffi::CString::new(secret.display().to_string()).unwrap();
    // SAFETY: a valid C string path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let opened = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (secret, opened) = (secret.clone(), opened.clone());
        // Opening a FIFO for writing blocks until someone opens it to read.
        std::thread::spawn(move || {
            let _w = std::fs::OpenOptions::new().write(true).open(&secret).unwrap();
            opened.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };

    let mut accepted = Vec::new();
    for (file, what) in &files {
        let response = app.upload_file(&dir.path().join("corpus").join(file), "c", "t").await;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        eprintln!("{file}: {status} {body}");
        match status {
            202 => accepted.push((file.clone(), body["lectureId"].as_str().unwrap().to_string())),
            400..=499 => {
                let message = body["message"].as_str().unwrap_or_default();
                assert!(!message.is_empty(), "{file} ({what}): {body}");
                assert!(
                    !message.contains(" @ 0x") && !message.contains(&dir.path().display().to_string()),
                    "{message}"
                );
            }
            _ => panic!("{file} ({what}): {status} {body}"),
        }
    }
    for (file, id) in &accepted {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let doc = app.lecture(id).await;
            if doc["processingStatus"] == "completed" || doc["processingStatus"] == "failed" {
                eprintln!("{file}: {} {}", doc["processingStatus"], doc["processingError"]);
                break;
            }
            assert!(Instant::now() < deadline, "{file} is stuck: {doc}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let refused: Vec<&String> =
        files.iter().map(|(f, _)| f).filter(|f| !accepted.iter().any(|(a, _)| a == *f)).collect();
    for must_refuse in [
        "playlist.m3u8.mp4",
        "concat.mp4",
        "polyglot.mp4",
        "pixel_bomb.mkv",
        "tiny_12h.mkv",
        "streams_40.mp4",
        "streams_1000.mp4",
    ] {
        assert!(refused.iter().any(|f| *f == must_refuse), "{must_refuse} was accepted");
    }
    assert!(!opened.load(std::sync::atomic::Ordering::SeqCst), "something opened {}", secret.display());
    // Let the watcher go.
    let _r = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&secret).unwrap();
    watcher.join().unwrap();
}
