//! vidpipe's own pages in Chromium, as a person uses them: the upload page
//! shows progress, then plays the lecture while it is still processing,
//! with every quality; a cut upload resumes where it stopped; the dashboard
//! follows a job through its states and retries it, and asks for a key.
//! `tests/browser/pages.mjs` acts and reports; the assertions are here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;
use crate::matrix::{browser_ready, ONE_COLUMN};

/// Runs `tests/browser/pages.mjs` with `options` and returns its report.
async fn drive(base: &str, options: Value) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/pages.mjs");
    let mut options = options;
    options["base"] = json!(base);
    options["shots"] = json!(shots_dir());
    let run = tokio::process::Command::new("node").arg(&script).arg(options.to_string()).kill_on_drop(true).output();
    let out = tokio::time::timeout(Duration::from_secs(200), run).await.expect("the page run ends").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report =
        stdout.lines().rev().find_map(|l| serde_json::from_str::<Value>(l).ok().filter(|r| r.get("ok").is_some()));
    let report = report.unwrap_or_else(|| panic!("no report: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["alerts"], json!([]), "no topic ran as code: {report}");
    eprintln!("{}: {report}", options["mode"]);
    assert_eq!(report["ok"], true, "{}: {}", options["mode"], report["failure"]);
    assert_eq!(report["errors"], json!([]), "no script error in the page");
    report
}

/// Where the screenshots of each page go (the README shows copies from
/// `docs/screenshots`): `target/tmp/screenshots`.
fn shots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An ffmpeg whose ladder encode runs at the source's own speed, so a
/// lecture stays processing for as long as it lasts; with `fail_once`, the
/// first ladder encode fails (and removes the marker).
fn slow_ffmpeg(dir: &Path, fail_once: Option<&Path>) -> PathBuf {
    let fail = fail_once.map_or(String::new(), |m| {
        format!("[ -e '{0}' ] && rm -f '{0}' && echo 'injected failure' >&2 && exit 1\n", m.display())
    });
    script(
        dir,
        "slow-ffmpeg",
        &format!("case \"$*\" in *var_stream_map*)\n{fail}exec ffmpeg -readrate 1 \"$@\";; esac\nexec ffmpeg \"$@\""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upload_page_shows_progress_then_plays_while_processing_with_every_quality() {
    if !browser_ready() {
        return;
    }
    let _alone = ONE_COLUMN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let ffmpeg = slow_ffmpeg(dir.path(), None);
    let app = spawn_app_with(|c| c.tools.ffmpeg = ffmpeg).await;
    let video = clip(dir.path(), "lecture.mp4", "1280x720", "30", 24, true);
    let topic = "<img src=x onerror=alert(1)><script>window.pwned=1</script><b>Limits</b> & more";
    let size = std::fs::metadata(&video).unwrap().len();
    let report = drive(
        &app.base,
        json!({"mode": "upload", "file": video, "course": "math101", "topic": topic, "uploadBytesPerSecond": size / 4}),
    )
    .await;

    assert!(report["progressText"].as_str().unwrap().contains(" of "), "bytes, speed and time left: {report}");
    let status = report["statusWhilePlaying"].as_str().unwrap();
    assert!(status.starts_with("Processing"), "it played before it was complete: {status}");
    assert!(report["advancedTo"].as_f64().unwrap() > report["start"].as_f64().unwrap() + 2.0);
    assert_eq!(report["qualities"], json!(["Auto", "240p", "360p", "720p"]), "every rendition offered");
    // The topic is text: shown as typed, no element made of it, nothing ran.
    assert_eq!((report["title"].as_str(), report["watchTitle"].as_str()), (Some(topic), Some(topic)));
    assert_eq!((report["scriptsInTitle"].as_u64(), report["pwned"].as_bool()), (Some(0), Some(false)));
    assert_eq!(report["watchStatus"], "Ready");
    assert!(report["poster"].as_str().unwrap().contains("thumbnail"), "the thumbnail is the poster: {report}");
    assert!(report["watchPlayed"].as_f64().unwrap() > 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_at_half_resumes_where_it_stopped() {
    if !browser_ready() {
        return;
    }
    let _alone = ONE_COLUMN.lock().await;
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let video = clip(dir.path(), "lecture.mp4", "1280x720", "30", 10, true);
    let size = std::fs::metadata(&video).unwrap().len();
    let report = drive(
        &app.base,
        json!({"mode": "resume", "file": video, "course": "c1", "topic": "cut", "cutAt": 0.5,
               "uploadBytesPerSecond": size / 6}),
    )
    .await;
    let offsets = report["resumedPatchOffsets"].as_array().unwrap();
    let first = offsets.first().and_then(Value::as_u64).unwrap_or_else(|| panic!("the page sent bytes: {report}"));
    assert!(
        first as f64 >= 0.3 * size as f64 && first < size,
        "the second page went on from the server's offset, not from 0: {first} of {size}"
    );
    let id = report["lectureLink"].as_str().unwrap().trim_start_matches("/watch/").to_string();
    let doc = app.wait_for(&id, "completed", Duration::from_secs(120)).await;
    assert!(doc["durationSeconds"].as_f64().unwrap() > 9.5, "the whole file arrived: {doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_asks_for_a_key_follows_a_job_and_retries_it() {
    if !browser_ready() {
        return;
    }
    let _alone = ONE_COLUMN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("fail-once");
    std::fs::write(&marker, b"").unwrap();
    let ffmpeg = slow_ffmpeg(dir.path(), Some(&marker));
    let app = spawn_app_with(|c| {
        c.tools.ffmpeg = ffmpeg;
        c.attempts = 1;
    })
    .await;
    let key = create_key(app.data_dir.path(), "operator", "admin");
    let c = &app.client;
    let paused = c.post(format!("{}/api/queue/pause", app.base)).bearer_auth(&key).send().await.unwrap();
    assert_eq!(paused.status(), 200);
    let video = clip(dir.path(), "lecture.mp4", "640x360", "30", 8, true);
    let form = reqwest::multipart::Form::new()
        .text("courseId", "c1")
        .text("nameOfTopic", "<img src=x onerror=alert(1)> followed")
        .part("uploadedFile", reqwest::multipart::Part::bytes(std::fs::read(&video).unwrap()).file_name("v.mp4"));
    let accepted = c.post(format!("{}/api/upload", app.base)).bearer_auth(&key).multipart(form).send().await.unwrap();
    let accepted: Value = accepted.json().await.unwrap();
    let id = accepted["lectureId"].as_str().unwrap().to_string();

    let report = drive(&app.base, json!({"mode": "dashboard", "key": key, "lecture": id})).await;
    assert_eq!(report["loginShown"], true);
    assert!(report["refusal"].as_str().unwrap().contains("API key"), "says why: {report}");
    assert!(report["pausedText"].as_str().unwrap().contains("paused"));
    assert_eq!(report["listed"], "waiting");
    assert!(
        report["rowText"].as_str().unwrap().contains("<img src=x onerror=alert(1)> followed"),
        "the row shows the topic as text: {report}"
    );
    assert_eq!(report["rowImages"], 0, "no element made of the topic");
    let seen: Vec<&str> = report["seen"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    let at = |state: &str, from: usize| seen[from..].iter().position(|s| *s == state).map(|i| i + from);
    let failed = at("failed", 0).unwrap_or_else(|| panic!("the failure was seen: {seen:?}"));
    let active = at("active", failed).unwrap_or_else(|| panic!("the retry ran: {seen:?}"));
    assert_eq!(seen.first(), Some(&"waiting"), "{seen:?}");
    assert_eq!(seen.last(), Some(&"completed"), "{seen:?}");
    assert!(active > failed && report["retried"] == true, "{seen:?}");
    assert!(report["attemptsShown"].to_string().contains("injected failure"), "the attempt's error: {report}");
    assert_eq!(report["sameDocument"], true, "no reload");
    assert!(report["cleanText"].as_str().unwrap().starts_with("Removed 1 completed"), "{report}");
    let doc = app.api.with_key(&key).wait_for(&id, "completed", Duration::from_secs(30)).await;
    assert_eq!(doc["processingStatus"], "completed", "cleaned, the lecture keeps its outcome: {doc}");
}
