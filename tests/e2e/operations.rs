//! The operator's side: Prometheus metrics, the seed's JSON metrics, live
//! events (SSE) across processes, signed webhooks from the outbox, alerts,
//! JSON logs and the scheduled cleanup.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::helpers::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Samples named `name`, by their labels, as Prometheus's reference
/// parser (Python's `prometheus_client`, installed by `.ci/run`) reads the
/// exposition.
fn samples(text: &str, name: &str) -> Vec<(HashMap<String, String>, f64)> {
    let parser = "import json, sys\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        out = [[s.name, s.labels, s.value] for f in text_string_to_metric_families(sys.stdin.read()) for s in f.samples]\n\
        print(json.dumps(out))";
    let mut child = std::process::Command::new("python3")
        .args(["-c", parser])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "not a valid exposition: {}", String::from_utf8_lossy(&out.stderr));
    let parsed: Vec<(String, HashMap<String, String>, f64)> = serde_json::from_slice(&out.stdout).unwrap();
    parsed.into_iter().filter(|(n, _, _)| n == name).map(|(_, labels, v)| (labels, v)).collect()
}

fn value(text: &str, name: &str, label: Option<(&str, &str)>) -> f64 {
    samples(text, name)
        .into_iter()
        .filter(|(labels, _)| label.is_none_or(|(k, v)| labels.get(k).map(String::as_str) == Some(v)))
        .map(|(_, v)| v)
        .sum()
}

async fn scrape(api: &Api) -> String {
    let response = api.client.get(format!("{}/metrics", api.base)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// The hostile corpus's file whose frames fail to decode after the first second.
fn undecodable(dir: &Path) -> std::path::PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile/make_corpus.py");
    let out = dir.join("corpus");
    let made = std::process::Command::new("python3").arg(script).arg(&out).arg(dir.join("secret.ts")).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    out.join("corrupt_after_start.mkv")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics_move_as_jobs_complete_and_fail() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let port = free_port();
    let server = Process::start("serve", data, &[("VIDPIPE_LISTEN", format!("127.0.0.1:{port}"))]);
    let api = Api::new(format!("http://127.0.0.1:{port}"));
    wait_until_up(&api.client, &api.base).await;

    let before = scrape(&api).await;
    assert_eq!(value(&before, "vidpipe_build_info", Some(("version", env!("CARGO_PKG_VERSION")))), 1.0);
    assert_eq!(value(&before, "vidpipe_jobs_completed_total", None), 0.0);

    let good = clip(data, "ok.mp4", "640x360", "30", 20, true);
    let id = api.upload_ok(&good).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // While it encodes, its ffmpeg is counted.
        if value(&scrape(&api).await, "vidpipe_ffmpeg_running", None) == 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "vidpipe_ffmpeg_running never showed the running ffmpeg");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    api.wait_for(&id, "completed", Duration::from_secs(60)).await;
    let bad = api.upload_ok(&undecodable(data)).await;
    api.wait_for(&bad, "failed", Duration::from_secs(60)).await;

    let after = scrape(&api).await;
    assert_eq!(value(&after, "vidpipe_jobs_completed_total", None), 1.0);
    assert_eq!(value(&after, "vidpipe_jobs_failed_total", Some(("reason", "input"))), 1.0);
    assert_eq!(value(&after, "vidpipe_jobs", Some(("state", "completed"))), 1.0);
    assert_eq!(value(&after, "vidpipe_jobs", Some(("state", "failed"))), 1.0);
    assert_eq!(value(&after, "vidpipe_jobs", Some(("state", "waiting"))), 0.0);
    for histogram in ["vidpipe_upload_to_completed_seconds_count", "vidpipe_upload_to_playable_seconds_count"] {
        assert!(value(&after, histogram, None) >= 1.0, "{histogram}:\n{after}");
    }
    assert!(value(&after, "vidpipe_encode_speed_ratio_count", None) >= 1.0);
    assert!(value(&after, "vidpipe_uploaded_bytes_total", None) >= std::fs::metadata(&good).unwrap().len() as f64);
    assert!(value(&after, "vidpipe_published_bytes_total", None) > 0.0);
    assert_eq!(value(&after, "vidpipe_ffmpeg_running", None), 0.0, "no ffmpeg left running");
    // Requests are counted by route template, never by raw path.
    assert!(value(&after, "vidpipe_http_requests_total", Some(("route", "/api/lectures/{id}"))) >= 1.0, "{after}");
    assert!(!after.contains(&id), "a lecture id leaked into a label");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_metrics_keep_the_seed_shape() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let clip = clip(dir.path(), "ok.mp4", "320x240", "30", 1, false);
    let id = app.upload_ok(&clip).await;
    app.wait_for(&id, "completed", Duration::from_secs(60)).await;
    // A second upload that waits: counted as waiting, not as throughput.
    app.client.post(format!("{}/api/queue/pause", app.base)).send().await.unwrap();
    app.upload_ok(&clip).await;
    let m: Value = app.client.get(format!("{}/api/metrics", app.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(m["queue"], serde_json::json!({"waiting": 1, "active": 0, "completed": 1, "failed": 0}), "{m}");
    let average = m["performance"]["avgProcessingTime"].as_str().unwrap();
    let seconds: f64 = average.strip_suffix('s').unwrap().parse().unwrap();
    assert!(seconds > 0.0 && seconds < 60.0, "{m}");
    assert_eq!(m["performance"]["throughput"], "1 jobs/hour");
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub(crate) struct Sse {
    pub id: Option<i64>,
    pub kind: String,
    pub data: Value,
}

/// Reads server-sent events from `url` until `until` accepts one (or the
/// deadline), starting after `last_event_id`.
pub(crate) async fn read_events(url: &str, last_event_id: Option<i64>, until: impl Fn(&Sse) -> bool) -> Vec<Sse> {
    let mut request = reqwest::Client::new().get(url).header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id.to_string());
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let chunk = tokio::time::timeout_at(deadline.into(), body.next()).await.expect("events kept coming");
        buffer.push_str(&String::from_utf8_lossy(&chunk.expect("stream open").unwrap()));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut event = Sse { id: None, kind: String::new(), data: Value::Null };
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    event.id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event.kind = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    event.data = serde_json::from_str(v.trim()).unwrap();
                }
            }
            if event.kind.is_empty() {
                continue; // a keep-alive comment
            }
            let done = until(&event);
            events.push(event);
            if done {
                return events;
            }
        }
    }
}

/// The API streams what a worker in another process does, through the
/// shared database (PostgreSQL: the API's feed polls the event log and is
/// woken early by NOTIFY), and a client that reconnects with Last-Event-ID
/// misses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_cross_processes_and_resume_without_loss() {
    let Some(database_url) = postgres_database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let port = free_port();
    // Heartbeats (and so progress events) every second.
    let env = [
        ("DATABASE_URL", database_url),
        ("VIDPIPE_LISTEN", format!("127.0.0.1:{port}")),
        ("VIDPIPE_LEASE", "3s".to_string()),
    ];
    let _api = Process::start("api", data, &env);
    let api = Api::new(format!("http://127.0.0.1:{port}"));
    wait_until_up(&api.client, &api.base).await;
    let _worker = Process::start("worker", data, &env);
    let id = api.upload_ok(&clip(data, "v.mp4", "1280x720", "30", 30, true)).await;
    let url = format!("{}/api/lectures/{id}/events", api.base);

    // From the start of the log, until it is playable; then the client drops.
    let first = read_events(&url, Some(0), |e| e.kind == "lecture.playable").await;
    let kinds: Vec<&str> = first.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds[..2], ["lecture.uploaded", "lecture.processing"], "{kinds:?}");
    let resume_at = first.last().unwrap().id.unwrap();
    // Reconnects where it left off.
    let second = read_events(&url, Some(resume_at), |e| e.kind == "lecture.completed").await;
    assert!(second.iter().all(|e| e.id.unwrap() > resume_at), "nothing seen twice");
    let completed = second.last().unwrap();
    assert_eq!(completed.data["data"]["processingStatus"], "completed", "{:?}", completed.data);
    assert!(completed.data["data"]["videoLink"].is_string(), "with the document: {:?}", completed.data);
    // Together they are the whole log of the lecture, in order.
    let all = read_events(&url, Some(0), |e| e.kind == "lecture.completed").await;
    let ids = |events: &[Sse]| events.iter().map(|e| e.id.unwrap()).collect::<Vec<_>>();
    assert_eq!([ids(&first), ids(&second)].concat(), ids(&all));
    assert!(ids(&all).windows(2).all(|w| w[0] < w[1]));
    assert!(all.iter().any(|e| e.kind == "lecture.progress"), "{:?}", all.iter().map(|e| &e.kind).collect::<Vec<_>>());

    // The admin stream carries every lecture's events, the same ones.
    let everything = read_events(&format!("{}/api/events", api.base), Some(0), |e| e.kind == "lecture.completed").await;
    let of_lecture: Vec<i64> =
        everything.iter().filter(|e| e.data["lectureId"] == id.as_str()).map(|e| e.id.unwrap()).collect();
    assert_eq!(of_lecture, ids(&all));

    // Without Last-Event-ID: the current document first, then changes.
    let snapshot = read_events(&url, None, |_| true).await;
    assert_eq!(snapshot[0].kind, "lecture.snapshot");
    assert_eq!(snapshot[0].data["processingStatus"], "completed");
}

/// A webhook receiver: answers 500 to the first `failures` requests, then
/// 200, and keeps every request it got.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<(axum::http::HeaderMap, String, u16)>>>,
}

async fn receiver(failures: usize, port: u16) -> Receiver {
    let got: Arc<Mutex<Vec<(axum::http::HeaderMap, String, u16)>>> = Arc::default();
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let seen = seen.clone();
            async move {
                let mut seen = seen.lock().unwrap();
                let status = if seen.len() < failures { 500 } else { 200 };
                seen.push((headers, body, status));
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver { addr, got }
}

impl Receiver {
    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// (webhook-id, type, lecture) of every request answered 200, after
    /// checking its signature as a receiver would.
    fn accepted(&self) -> Vec<(String, String, Option<String>)> {
        let key = base64::engine::general_purpose::STANDARD.decode(SECRET.trim_start_matches("whsec_")).unwrap();
        let got = self.got.lock().unwrap();
        got.iter()
            .filter(|(_, _, status)| *status == 200)
            .map(|(headers, body, _)| {
                let header = |name: &str| headers[name].to_str().unwrap().to_string();
                let (id, timestamp) = (header("webhook-id"), header("webhook-timestamp"));
                let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
                mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
                let expected =
                    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
                assert!(header("webhook-signature").split(' ').any(|s| s == expected), "bad signature on {id}");
                let age = crate::helpers::unix_now() - timestamp.parse::<i64>().unwrap();
                assert!(age.abs() < 300, "timestamp is now");
                let v: Value = serde_json::from_str(body).unwrap();
                (id, v["type"].as_str().unwrap().to_string(), v["data"]["lectureId"].as_str().map(str::to_string))
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_ordered_retried_and_delivered_once_by_id() {
    let hook = receiver(5, 0).await;
    let url = hook.url();
    let app = spawn_app_with(|c| {
        c.operations.webhooks.urls = vec![url];
        c.operations.webhooks.key = Some(SECRET.parse().unwrap());
        c.operations.webhooks.backoff = Duration::from_millis(50);
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let id = app.upload_ok(&clip(dir.path(), "v.mp4", "320x240", "30", 2, false)).await;
    app.wait_for(&id, "completed", Duration::from_secs(60)).await;
    let wanted = ["lecture.uploaded", "lecture.processing", "lecture.playable", "lecture.completed"];
    eventually("every milestone delivered", Duration::from_secs(30), || {
        let kinds: Vec<String> = hook.accepted().into_iter().map(|(_, kind, _)| kind).collect();
        wanted.iter().all(|w| kinds.iter().any(|k| k == w))
    })
    .await;
    // Long enough for duplicates to show, were there any.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let accepted = hook.accepted();
    let failed = hook.got.lock().unwrap().iter().filter(|(_, _, s)| *s == 500).count();
    assert_eq!(failed, 5, "the receiver refused five times");
    let mut ids: Vec<&String> = accepted.iter().map(|(id, _, _)| id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), accepted.len(), "each event accepted exactly once: {accepted:?}");
    let mine: Vec<&str> =
        accepted.iter().filter(|(_, _, l)| l.as_deref() == Some(&id)).map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(mine, wanted, "in order, no progress events");
    let (ok, dead, _) = cli_json(app.data_dir.path(), &["webhooks", "list", "--state", "dead"]);
    assert!(ok && dead.as_array().unwrap().is_empty(), "{dead}");
}

fn cli_json(data: &Path, args: &[&str]) -> (bool, Value, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vidpipe"))
        .args(args)
        .arg("--json")
        .env("VIDPIPE_DATA_DIR", data)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success(), serde_json::from_str(&stdout).unwrap_or(Value::Null), stdout)
}

/// The outbox survives `kill -9`: a completion committed while the receiver
/// was down is delivered by the restarted process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_committed_before_a_kill_is_delivered_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let (port, hook_port) = (free_port(), free_port());
    let env = [
        ("VIDPIPE_LISTEN", format!("127.0.0.1:{port}")),
        ("VIDPIPE_WEBHOOK_URL", format!("http://127.0.0.1:{hook_port}/hook")),
        ("VIDPIPE_WEBHOOK_SECRET", SECRET.to_string()),
        ("VIDPIPE_WEBHOOK_BACKOFF", "200ms".to_string()),
    ];
    let mut server = Process::start("serve", data, &env);
    let api = Api::new(format!("http://127.0.0.1:{port}"));
    wait_until_up(&api.client, &api.base).await;
    let id = api.upload_ok(&clip(data, "v.mp4", "320x240", "30", 1, false)).await;
    api.wait_for(&id, "completed", Duration::from_secs(60)).await;
    // Nobody listens: the completion is committed, its delivery pending
    // (the dispatcher turns it into one within a poll or two).
    eventually("the completion's delivery is pending", Duration::from_secs(10), || {
        let (_, pending, _) = cli_json(data, &["webhooks", "list", "--state", "pending"]);
        pending.as_array().is_some_and(|p| p.iter().any(|d| d["kind"] == "lecture.completed"))
    })
    .await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    let hook = receiver(0, hook_port).await;
    let _restarted = Process::start("serve", data, &env);
    eventually("delivered after the restart", Duration::from_secs(30), || {
        hook.accepted().iter().any(|(_, kind, lecture)| kind == "lecture.completed" && lecture.as_deref() == Some(&id))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_alert_fires_once_shows_in_health_and_resolves_once() {
    let hook = receiver(0, 0).await;
    let url = hook.url();
    let app = spawn_app_with(|c| {
        c.operations.webhooks.urls = vec![url];
        c.operations.webhooks.key = Some(SECRET.parse().unwrap());
        c.operations.alerts.backlog = 1;
        c.operations.alerts.interval = Duration::from_millis(200);
    })
    .await;
    let health = || async {
        let r = app.client.get(format!("{}/api/health/queue", app.base)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap())
    };
    let (status, doc) = health().await;
    assert_eq!((status, doc["status"].as_str()), (200, Some("healthy")), "{doc}");
    assert_eq!(doc["worker"]["status"], "idle", "{doc}");

    app.client.post(format!("{}/api/queue/pause", app.base)).send().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let clip = clip(dir.path(), "v.mp4", "320x240", "30", 1, false);
    let ids = [app.upload_ok(&clip).await, app.upload_ok(&clip).await];
    let deadline = Instant::now() + Duration::from_secs(10);
    let doc = loop {
        let (status, doc) = health().await;
        if status == 503 {
            break doc;
        }
        assert!(Instant::now() < deadline, "no alert: {doc}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(doc["status"], "unhealthy");
    assert_eq!(doc["alerts"][0]["alert"], "backlog", "{doc}");
    let (ok, status, _) = cli_json(app.data_dir.path(), &["queue", "status"]);
    assert!(ok && status["alerts"][0]["alert"] == "backlog", "{status}");
    // Several evaluations later: still one firing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let count = |kind: &str| hook.accepted().iter().filter(|(_, k, _)| k == kind).count();
    assert_eq!(count("alert.firing"), 1);

    app.client.post(format!("{}/api/queue/resume", app.base)).send().await.unwrap();
    for id in &ids {
        app.wait_for(id, "completed", Duration::from_secs(60)).await;
    }
    eventually("resolved", Duration::from_secs(10), || count("alert.resolved") == 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!((count("alert.firing"), count("alert.resolved")), (1, 1));
    let (status, doc) = health().await;
    assert_eq!((status, doc["status"].as_str()), (200, Some("healthy")), "{doc}");
}

/// `vidpipe api` alone has no worker: its health says so (the old system
/// reported its own absent worker as fine), until a worker process beats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_without_workers_is_unhealthy_until_one_beats() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let port = free_port();
    let env = [
        ("VIDPIPE_LISTEN", format!("127.0.0.1:{port}")),
        ("VIDPIPE_ALERT_NO_WORKER", "1s".to_string()),
        ("VIDPIPE_ALERT_INTERVAL", "200ms".to_string()),
    ];
    let _api = Process::start("api", data, &env);
    let api = Api::new(format!("http://127.0.0.1:{port}"));
    wait_until_up(&api.client, &api.base).await;
    let health = || async {
        let r = api.client.get(format!("{}/api/health/queue", api.base)).send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    let (_, doc) = health().await;
    assert_eq!(doc["worker"]["concurrency"], 0, "{doc}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, doc) = health().await;
        if status == 503 && doc["alerts"].as_array().unwrap().iter().any(|a| a["alert"] == "no_worker") {
            break;
        }
        assert!(Instant::now() < deadline, "no no_worker alert: {doc}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _worker = Process::start("worker", data, &env);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, doc) = health().await;
        if status == 200 && doc["worker"]["live"] == 1 {
            assert_eq!(doc["worker"]["concurrency"], 1, "{doc}");
            break;
        }
        assert!(Instant::now() < deadline, "the worker did not resolve it: {doc}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_one_event_per_milestone_with_the_ids() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let port = free_port();
    let env = [("VIDPIPE_LISTEN", format!("127.0.0.1:{port}")), ("VIDPIPE_LOG_FORMAT", "json".to_string())];
    let server = Process::start("serve", data, &env);
    let api = Api::new(format!("http://127.0.0.1:{port}"));
    wait_until_up(&api.client, &api.base).await;
    let id = api.upload_ok(&clip(data, "v.mp4", "320x240", "30", 2, false)).await;
    api.wait_for(&id, "completed", Duration::from_secs(60)).await;
    let log_file = std::fs::read_dir(data)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("serve-"))
        .unwrap();
    let find = |message: &str| -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&log_file).unwrap();
            let lines: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
                .collect();
            if let Some(line) = lines.into_iter().find(|l| l["message"] == message && l["lecture"] == id.as_str()) {
                return line;
            }
            assert!(Instant::now() < deadline, "no `{message}` for {id} in:\n{text}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    find("job started");
    find("playable");
    let done = find("job completed");
    assert!(done["duration_s"].as_f64().unwrap() > 0.0, "{done}");
    assert!(done["speed"].as_str().unwrap().ends_with('x'), "{done}");
    assert_eq!(done["job"], id.as_str());
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_job_records_are_cleaned_on_a_timer_and_lectures_keep_their_outcome() {
    let app = spawn_app_with(|c| {
        c.operations.clean.interval = Duration::from_millis(300);
        c.operations.clean.completed_after = Duration::from_secs(3);
        c.operations.clean.failed_after = Duration::from_secs(3);
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let base = app.base.clone();
    let job_status = |id: String| {
        let url = format!("{base}/api/jobs/{id}");
        async move { reqwest::get(url).await.unwrap().status() }
    };
    // Each record is seen as soon as its job ends, well inside the 3 s it is
    // kept; making the inputs first keeps a slow machine out of that window.
    let (good, undecodable) = (clip(dir.path(), "v.mp4", "320x240", "30", 1, false), undecodable(dir.path()));
    let id = app.upload_ok(&good).await;
    let doc = app.wait_for(&id, "completed", Duration::from_secs(60)).await;
    assert_eq!(job_status(id.clone()).await, 200, "the completed job's record is there at first");
    let bad = app.upload_ok(&undecodable).await;
    let failed = app.wait_for(&bad, "failed", Duration::from_secs(60)).await;
    assert_eq!(job_status(bad.clone()).await, 200, "the failed job's record is there at first");
    let deadline = Instant::now() + Duration::from_secs(15);
    while job_status(id.clone()).await != 404 || job_status(bad.clone()).await != 404 {
        assert!(Instant::now() < deadline, "the job records were not cleaned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = app.lecture(&id).await;
    assert_eq!(after["processingStatus"], "completed");
    assert_eq!(after["videoLink"], doc["videoLink"]);
    let after = app.lecture(&bad).await;
    assert_eq!(after["processingStatus"], "failed", "a failed lecture stays failed without its job");
    assert_eq!(after["processingError"], failed["processingError"]);
}

/// A worker has no API: `VIDPIPE_METRICS_LISTEN` gives it a keyless /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_serves_metrics_on_its_own_address() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _worker = Process::start("worker", dir.path(), &[("VIDPIPE_METRICS_LISTEN", format!("127.0.0.1:{port}"))]);
    let api = Api::new(format!("http://127.0.0.1:{port}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        if let Ok(r) = api.client.get(format!("{}/metrics", api.base)).send().await {
            break r.text().await.unwrap();
        }
        assert!(Instant::now() < deadline, "no /metrics on the worker");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(value(&text, "vidpipe_build_info", None), 1.0, "{text}");
    assert_eq!(value(&text, "vidpipe_jobs", Some(("state", "waiting"))), 0.0);
    let other = api.client.get(format!("{}/api/lectures", api.base)).send().await.unwrap();
    assert_eq!(other.status(), 404, "only /metrics there");
}

/// Polls the health document until `alert` fires; returns its entry.
async fn until_firing(app: &TestApp, alert: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = app.client.get(format!("{}/api/health/queue", app.base)).send().await.unwrap();
        let status = response.status().as_u16();
        let doc: Value = response.json().await.unwrap();
        if let Some(entry) = doc["alerts"].as_array().unwrap().iter().find(|a| a["alert"] == alert) {
            assert_eq!((status, doc["status"].as_str()), (503, Some("unhealthy")), "{doc}");
            return entry.clone();
        }
        assert!(Instant::now() < deadline, "{alert} did not fire: {doc}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_rate_over_the_threshold_fires_an_alert() {
    let app = spawn_app_with(|c| {
        c.operations.alerts.failure_rate = 0.5;
        c.operations.alerts.interval = Duration::from_millis(200);
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let bad = undecodable(dir.path());
    let good = clip(dir.path(), "ok.mp4", "320x240", "30", 1, false);
    // Four failures out of four: under the five ended jobs the rule needs.
    for _ in 0..4 {
        let id = app.upload_ok(&bad).await;
        app.wait_for(&id, "failed", Duration::from_secs(60)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let doc = app.client.get(format!("{}/api/health/queue", app.base)).send().await.unwrap();
    assert_eq!(doc.status(), 200, "four jobs are too few to judge");
    // A fifth ended job, a success: 4 of 5 failed, over half.
    let id = app.upload_ok(&good).await;
    app.wait_for(&id, "completed", Duration::from_secs(60)).await;
    let alert = until_firing(&app, "failure_rate").await;
    assert!(alert["detail"].as_str().unwrap().starts_with("4 of 5 jobs failed"), "{alert}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_waiting_too_long_fires_an_alert() {
    let app = spawn_app_with(|c| {
        c.operations.alerts.oldest_waiting = Duration::from_secs(2);
        c.operations.alerts.interval = Duration::from_millis(200);
    })
    .await;
    app.client.post(format!("{}/api/queue/pause", app.base)).send().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    app.upload_ok(&clip(dir.path(), "ok.mp4", "320x240", "30", 1, false)).await;
    let uploaded = Instant::now();
    let alert = until_firing(&app, "oldest_waiting").await;
    assert!(uploaded.elapsed() >= Duration::from_secs(2), "not before the threshold: {alert}");
}
