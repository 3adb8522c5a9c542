//! Resumable uploads (tus 1.0): two real tus clients written apart
//! (tus-js-client, tuspy) resume across a `kill -9` of the server, the protocol's rules answer as tus says, and
//! unfinished uploads expire with their bytes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

/// Runs `tests/browser/tus_upload.mjs` (tus-js-client in Node.js).
pub async fn tus_client(options: Value) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/tus_upload.mjs");
    let run = tokio::process::Command::new("node").arg(&script).arg(options.to_string()).kill_on_drop(true).output();
    let out = tokio::time::timeout(Duration::from_secs(120), run).await.expect("the tus client ends").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or_else(|| panic!("no report from the tus client: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)))
}

/// Whether Node.js and tus-js-client are here: in CI they must be.
pub fn tus_client_ready() -> bool {
    let module = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules/tus-js-client");
    let node = std::process::Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    if node && module.exists() {
        return true;
    }
    let help = "the tus client test needs Node.js and `npm ci --prefix tests/browser`; .ci/run installs them";
    assert!(std::env::var_os("CI").is_none(), "{help}");
    eprintln!("SKIPPED: {help}");
    false
}

/// Runs `tests/e2e/tuspy_upload.py` (tuspy, the Python tus client).
async fn tuspy(options: Value) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/tuspy_upload.py");
    let run = tokio::process::Command::new("python3").arg(&script).arg(options.to_string()).kill_on_drop(true).output();
    let out = tokio::time::timeout(Duration::from_secs(120), run).await.expect("tuspy ends").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = stdout.lines().rev().find_map(|l| serde_json::from_str::<Value>(l).ok());
    let report =
        report.unwrap_or_else(|| panic!("no report from tuspy: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert!(report.get("error").is_none(), "tuspy: {report}");
    report
}

/// Whether Python has tuspy: in CI it must.
fn tuspy_ready() -> bool {
    let found = std::process::Command::new("python3").args(["-c", "import tusclient"]).output();
    if found.is_ok_and(|o| o.status.success()) {
        return true;
    }
    let help = "the tuspy test needs `pip install tuspy`; .ci/run installs it";
    assert!(std::env::var_os("CI").is_none(), "{help}");
    eprintln!("SKIPPED: {help}");
    false
}

fn partial_files(data: &Path) -> Vec<PathBuf> {
    files_under(&data.join("uploads/partial"))
}

async fn head(api: &Api, url: &str, key: Option<&str>) -> reqwest::Response {
    let mut request = api.client.head(url).header("Tus-Resumable", "1.0.0");
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

fn number(response: &reqwest::Response, name: &str) -> u64 {
    response.headers()[name].to_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tus_js_client_resumes_after_kill_9_and_the_upload_becomes_a_lecture() {
    if !tus_client_ready() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let key = create_key(data.path(), "uploader", "upload");
    let other = create_key(data.path(), "someone-else", "admin");
    let clips = tempfile::tempdir().unwrap();
    let video = clip(clips.path(), "lecture.mp4", "640x360", "30", 8, true);
    let size = std::fs::metadata(&video).unwrap().len();
    assert!(size > 400_000, "the clip spans several chunks: {size} bytes");

    let (server, api) = serve(data.path(), &[]).await;
    let options = |endpoint: &str, upload_url: Option<String>, stop_after: Option<u64>| {
        json!({
            "endpoint": endpoint, "file": video, "key": key, "chunkSize": 65536,
            "metadata": {"courseId": "c1", "nameOfTopic": "résumé, resumed", "filename": "lecture.mp4"},
            "uploadUrl": upload_url, "stopAfter": stop_after,
        })
    };
    let first = tus_client(options(&format!("{}/api/uploads", api.base), None, Some(size / 2))).await;
    assert_eq!(first["stopped"], true, "{first}");
    assert!(first["lectureId"].is_null(), "no lecture from half a file: {first}");
    let url = first["url"].as_str().unwrap().to_string();
    let path = url.strip_prefix(&api.base).unwrap().to_string();

    let probe = head(&api, &url, Some(&key)).await;
    assert_eq!(probe.status(), 200);
    let kept = number(&probe, "upload-offset");
    assert!(kept > 0 && kept < size, "half the file is kept: {kept} of {size}");
    assert_eq!(number(&probe, "upload-length"), size);
    assert_eq!(head(&api, &url, Some(&other)).await.status(), 404, "another key does not see it");
    assert_eq!(std::fs::metadata(&partial_files(data.path())[0]).unwrap().len(), kept);

    // The server dies without warning; a new one resumes where it stopped.
    drop(server);
    let (_server, api) = serve(data.path(), &[]).await;
    let resumed_url = format!("{}{path}", api.base);
    let resumed = head(&api, &resumed_url, Some(&key)).await;
    assert_eq!(number(&resumed, "upload-offset"), kept, "the durable offset survives kill -9");
    let second = tus_client(options(&format!("{}/api/uploads", api.base), Some(resumed_url.clone()), None)).await;
    assert_eq!(second["done"], true, "{second}");
    assert_eq!(second["offset"], size);
    let id = second["lectureId"].as_str().unwrap_or_else(|| panic!("the last PATCH names the lecture: {second}"));
    assert_eq!(path, format!("/api/uploads/{id}"), "the lecture has the upload's id");
    assert_eq!(head(&api, &resumed_url, Some(&key)).await.headers()["vidpipe-lecture-id"], id, "HEAD names it too");

    let doc = api.with_key(&key).wait_for(id, "completed", Duration::from_secs(90)).await;
    assert_eq!((doc["courseId"].as_str(), doc["nameOfTopic"].as_str()), (Some("c1"), Some("résumé, resumed")));
    assert!(doc["durationSeconds"].as_f64().unwrap() > 7.5, "the whole file arrived: {doc}");
    assert!(partial_files(data.path()).is_empty(), "the partial file became the source");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuspy_finds_its_upload_after_a_restart_and_goes_on_from_the_server_offset() {
    if !tuspy_ready() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let key = create_key(data.path(), "uploader", "upload");
    let clips = tempfile::tempdir().unwrap();
    let video = clip(clips.path(), "lecture.mp4", "640x360", "30", 8, true);
    let size = std::fs::metadata(&video).unwrap().len();
    // The same address after the restart: the client stored the full URL.
    let port = free_port();
    let start = || {
        let process = Process::start("serve", data.path(), &[("VIDPIPE_LISTEN", format!("127.0.0.1:{port}"))]);
        let api = Api::new(format!("http://127.0.0.1:{port}"));
        async move {
            wait_until_up(&api.client, &api.base).await;
            (process, api)
        }
    };
    let options = |stop_after: Option<u64>| {
        json!({
            "endpoint": format!("http://127.0.0.1:{port}/api/uploads"), "file": video, "key": key,
            "chunkSize": 65536, "storage": clips.path().join("tus-urls.json"), "stopAfter": stop_after,
            "metadata": {"courseId": "c2", "nameOfTopic": "from Python", "filename": "lecture.mp4"},
        })
    };
    let (server, api) = start().await;
    let first = tuspy(options(Some(size / 2))).await;
    assert_eq!((first["stopped"].as_bool(), first["resumedFrom"].is_null()), (Some(true), true), "{first}");
    let url = first["url"].as_str().unwrap().to_string();
    let kept = number(&head(&api, &url, Some(&key)).await, "upload-offset");
    assert!(kept > 0 && kept < size, "half the file is kept: {kept} of {size}");

    drop(server); // kill -9
    let (_server, api) = start().await;
    let second = tuspy(options(None)).await;
    assert_eq!(second["url"], url.as_str(), "the same upload, found by the client: {second}");
    assert_eq!(second["resumedFrom"], kept, "it went on from the server's offset, not from 0: {second}");
    assert_eq!((second["done"].as_bool(), second["offset"].as_u64()), (Some(true), Some(size)), "{second}");
    let id = second["lectureId"].as_str().unwrap_or_else(|| panic!("the last PATCH names the lecture: {second}"));
    let doc = api.with_key(&key).wait_for(id, "completed", Duration::from_secs(90)).await;
    assert_eq!(doc["nameOfTopic"], "from Python");
    assert!(doc["durationSeconds"].as_f64().unwrap() > 7.5, "the whole file arrived: {doc}");
}

/// A request as a tus client would send it.
fn tus(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    request.header("Tus-Resumable", "1.0.0")
}

fn metadata(pairs: &[(&str, &str)]) -> String {
    use base64::Engine;
    let encode = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    pairs.iter().map(|(k, v)| format!("{k} {}", encode(v))).collect::<Vec<_>>().join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tus_endpoint_answers_as_the_protocol_says() {
    let app = spawn_app().await;
    let url = format!("{}/api/uploads", app.base);
    let c = &app.client;
    let fields = metadata(&[("courseId", "c1"), ("nameOfTopic", "t"), ("filename", "v.mp4")]);

    let discovery = c.request(reqwest::Method::OPTIONS, &url).send().await.unwrap();
    assert_eq!(discovery.status(), 204);
    assert_eq!(discovery.headers()["tus-version"], "1.0.0");
    assert_eq!(discovery.headers()["tus-extension"], "creation,creation-with-upload,termination,expiration");
    assert_eq!(discovery.headers()["tus-max-size"], (64u64 << 20).to_string().as_str());

    let no_version =
        c.post(&url).header("Upload-Length", "10").header("Upload-Metadata", &fields).send().await.unwrap();
    assert_eq!(no_version.status(), 412);
    assert_eq!(no_version.headers()["tus-resumable"], "1.0.0", "errors say the version too");
    assert_eq!(no_version.headers()["tus-version"], "1.0.0", "a 412 says which versions it takes");
    let empty = tus(c.post(&url)).header("Upload-Length", "0").header("Upload-Metadata", &fields);
    let empty = empty.send().await.unwrap();
    assert_eq!(empty.status(), 400);
    assert!(empty.text().await.unwrap().contains("empty file"));
    let twice = format!("{fields},{}", metadata(&[("courseId", "c2")]));
    let twice = tus(c.post(&url)).header("Upload-Length", "10").header("Upload-Metadata", twice);
    let twice = twice.send().await.unwrap();
    assert_eq!(twice.status(), 400);
    assert!(twice.text().await.unwrap().contains("`courseId` twice"));
    let no_topic =
        tus(c.post(&url)).header("Upload-Length", "10").header("Upload-Metadata", metadata(&[("courseId", "c")]));
    let no_topic = no_topic.send().await.unwrap();
    assert_eq!(no_topic.status(), 400);
    assert!(no_topic.text().await.unwrap().contains("nameOfTopic"));
    let too_big =
        tus(c.post(&url)).header("Upload-Length", (65u64 << 20).to_string()).header("Upload-Metadata", &fields);
    assert_eq!(too_big.send().await.unwrap().status(), 413);

    // creation-with-upload: the first bytes ride on the POST.
    let body: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
    let created = tus(c.post(&url))
        .header("Upload-Length", "3000")
        .header("Upload-Metadata", &fields)
        .header("Content-Type", "application/offset+octet-stream")
        .body(body[..1000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(number(&created, "upload-offset"), 1000);
    assert!(created.headers().contains_key("upload-expires"));
    let upload = format!("{}{}", app.base, created.headers()["location"].to_str().unwrap());
    assert_eq!(partial_files(app.data_dir.path()).len(), 1);

    let patch = |offset: u64, bytes: &[u8], content_type: &str| {
        tus(c.patch(&upload))
            .header("Upload-Offset", offset.to_string())
            .header("Content-Type", content_type)
            .body(bytes.to_vec())
            .send()
    };
    let stale = patch(0, &body[..10], "application/offset+octet-stream").await.unwrap();
    assert_eq!(stale.status(), 409);
    assert!(stale.text().await.unwrap().contains("at byte 1000"), "says where to resume");
    assert_eq!(patch(1000, &body[1000..2000], "application/octet-stream").await.unwrap().status(), 415);
    let more = patch(1000, &body[1000..2000], "application/offset+octet-stream").await.unwrap();
    assert_eq!((more.status().as_u16(), number(&more, "upload-offset")), (204, 2000));

    // Termination: the bytes go, the upload is gone.
    assert_eq!(tus(c.delete(&upload)).send().await.unwrap().status(), 204);
    assert!(partial_files(app.data_dir.path()).is_empty());
    assert_eq!(tus(c.head(&upload)).send().await.unwrap().status(), 404);

    // The last bytes of something that is not a video (noise: ffprobe finds
    // no container): 422, nothing kept, no lecture.
    let created = tus(c.post(&url)).header("Upload-Length", "3000").header("Upload-Metadata", &fields);
    let created = created.send().await.unwrap();
    let upload = format!("{}{}", app.base, created.headers()["location"].to_str().unwrap());
    let refused = tus(c.patch(&upload))
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422, "{:?}", refused.text().await);
    assert!(partial_files(app.data_dir.path()).is_empty());
    assert_eq!(tus(c.head(&upload)).send().await.unwrap().status(), 404);
    let lectures: Value = c.get(format!("{}/api/lectures", app.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(lectures["total"], 0, "{lectures}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_upload_expires_with_its_bytes() {
    let app = spawn_app_with(|c| c.limits.upload_expiry = Duration::from_secs(2)).await;
    let fields = metadata(&[("courseId", "c1"), ("nameOfTopic", "t")]);
    let created = tus(app.client.post(format!("{}/api/uploads", app.base)))
        .header("Upload-Length", "5000")
        .header("Upload-Metadata", &fields)
        .header("Content-Type", "application/offset+octet-stream")
        .body(vec![7u8; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let upload = format!("{}{}", app.base, created.headers()["location"].to_str().unwrap());
    assert_eq!(partial_files(app.data_dir.path()).len(), 1, "the bytes are there first");
    eventually("the expired upload's bytes are removed", Duration::from_secs(15), || {
        partial_files(app.data_dir.path()).is_empty()
    })
    .await;
    assert_eq!(tus(app.client.head(&upload)).send().await.unwrap().status(), 404);
}

/// ffprobe failing on our side (here: gone from its path) is not the
/// file's fault: the bytes stay, and a `HEAD` once ffprobe is back makes
/// the lecture.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_whose_probe_failed_on_our_side_is_kept_and_finished_later() {
    let dir = tempfile::tempdir().unwrap();
    let ffprobe = script(dir.path(), "ffprobe", "exec ffprobe \"$@\"");
    let app = spawn_app_with(|c| c.tools.ffprobe = ffprobe.clone()).await;
    let video = std::fs::read(clip(dir.path(), "v.mp4", "320x240", "25", 2, true)).unwrap();
    let fields = metadata(&[("courseId", "c1"), ("nameOfTopic", "t"), ("filename", "v.mp4")]);
    let c = &app.client;
    let created = tus(c.post(format!("{}/api/uploads", app.base)))
        .header("Upload-Length", video.len().to_string())
        .header("Upload-Metadata", &fields);
    let created = created.send().await.unwrap();
    let upload = format!("{}{}", app.base, created.headers()["location"].to_str().unwrap());

    let away = dir.path().join("ffprobe.away");
    std::fs::rename(&ffprobe, &away).unwrap();
    let last = tus(c.patch(&upload))
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .body(video.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(last.status(), 500, "{:?}", last.text().await);
    assert_eq!(partial_files(app.data_dir.path()).len(), 1, "the bytes stay");
    let still = head(&app.api, &upload, None).await;
    assert_eq!(still.status(), 500, "HEAD tries again, and ffprobe is still gone");

    std::fs::rename(&away, &ffprobe).unwrap();
    let done = head(&app.api, &upload, None).await;
    assert_eq!(done.status(), 200);
    assert_eq!(number(&done, "upload-offset"), video.len() as u64);
    let lecture = done.headers()["vidpipe-lecture-id"].to_str().unwrap().to_string();
    app.wait_for(&lecture, "completed", std::time::Duration::from_secs(120)).await;
}

/// creation-with-upload whose body pauses past the idle timeout: the
/// upload exists with what came, so the answer is its `Location`, not a
/// bare 408 that would leave the client nothing to resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_bytes_that_stall_still_give_the_client_its_upload() {
    use futures::StreamExt;
    let app = spawn_app_with(|c| c.limits.body_idle_timeout = Duration::from_secs(1)).await;
    let fields = metadata(&[("courseId", "c1"), ("nameOfTopic", "t"), ("filename", "v.mp4")]);
    let first = futures::stream::iter([Ok::<_, std::io::Error>(vec![5u8; 1000])]).chain(futures::stream::pending());
    let created = tus(app.client.post(format!("{}/api/uploads", app.base)))
        .header("Upload-Length", "3000")
        .header("Upload-Metadata", &fields)
        .header("Content-Type", "application/offset+octet-stream")
        .body(reqwest::Body::wrap_stream(first));
    let created = tokio::time::timeout(Duration::from_secs(20), created.send()).await.expect("answered").unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(number(&created, "upload-offset"), 1000);
    let upload = format!("{}{}", app.base, created.headers()["location"].to_str().unwrap());
    let resumed = head(&app.api, &upload, None).await;
    assert_eq!((resumed.status().as_u16(), number(&resumed, "upload-offset")), (200, 1000));
}
