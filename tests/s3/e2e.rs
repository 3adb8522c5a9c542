//! Upload → S3 → playback, with the S3 server failing under the job.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use vidpipe::config::StorageConfig;
use vidpipe::publish::s3::S3Config;
use vidpipe::startup::{Application, Role};
use vidpipe::transcode::playlist;

use crate::helpers::*;
use crate::server::{S3Server, SECRET_KEY};

const PREFIX: &str = "vod";

fn s3_app_config(server: &S3Server, adjust: impl FnOnce(&mut S3Config)) -> StorageConfig {
    let mut s3 = server.config(PREFIX);
    s3.signed_url_ttl = Some(Duration::from_secs(600));
    adjust(&mut s3);
    StorageConfig::S3(Box::new(s3))
}

/// The objects a completed lecture must have, from its own playlists:
/// master, thumbnail, storyboard, and per rendition (video or captions)
/// the playlist and every file it names (initialization section and
/// segments).
async fn expected_objects(server: &S3Server, prefix: &str, renditions: &[String]) -> BTreeSet<String> {
    use object_store::ObjectStoreExt;
    let client = server.client();
    let mut keys: BTreeSet<String> = ["master.m3u8", "thumbnail.jpg", "storyboard.jpg", "storyboard.vtt"]
        .iter()
        .map(|file| format!("{PREFIX}/{prefix}/{file}"))
        .collect();
    for name in renditions {
        let playlist_key = format!("{PREFIX}/{prefix}/{name}/index.m3u8");
        let bytes = client.get(&playlist_key.as_str().into()).await.unwrap().bytes().await.unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        assert!(text.contains("#EXT-X-ENDLIST"), "{playlist_key} is a finished VOD playlist:\n{text}");
        for file in playlist::files(&text) {
            keys.insert(format!("{PREFIX}/{prefix}/{name}/{file}"));
        }
        keys.insert(playlist_key);
    }
    keys
}

fn renditions(doc: &Value) -> Vec<String> {
    doc["renditions"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_string()).collect()
}

/// The video renditions and the caption tracks: each a directory with a playlist.
fn playlist_dirs(doc: &Value) -> Vec<String> {
    let captions = doc["captions"].as_array().unwrap().iter();
    renditions(doc)
        .into_iter()
        .chain(captions.map(|c| format!("captions-{}", c["language"].as_str().unwrap())))
        .collect()
}

/// Published prefix (`<lecture>/<attempt>`) from a signed videoLink's lecture.
async fn only_attempt(server: &S3Server, id: &str) -> String {
    let keys = server.objects().await;
    let attempts: BTreeSet<&str> = keys
        .iter()
        .filter_map(|k| k.strip_prefix(&format!("{PREFIX}/{id}/")))
        .map(|rest| rest.split('/').next().unwrap())
        .collect();
    assert_eq!(attempts.len(), 1, "exactly one attempt published: {keys:?}");
    format!("{id}/{}", attempts.into_iter().next().unwrap())
}

/// Every object of the lecture exists, nothing else, with the right type.
async fn assert_published_exactly(server: &S3Server, id: &str, doc: &Value) {
    let prefix = only_attempt(server, id).await;
    let expected = expected_objects(server, &prefix, &playlist_dirs(doc)).await;
    let actual: BTreeSet<String> = server.objects().await.into_iter().collect();
    assert_eq!(actual, expected, "the bucket holds exactly the lecture's files");
    use object_store::{Attribute, GetOptions, ObjectStore};
    let client = server.client();
    for key in &expected {
        let head =
            client.get_opts(&key.as_str().into(), GetOptions { head: true, ..Default::default() }).await.unwrap();
        let content_type = head.attributes.get(&Attribute::ContentType).map(|v| v.to_string()).unwrap_or_default();
        let want = match key.rsplit_once('.').unwrap().1 {
            "m3u8" => "application/vnd.apple.mpegurl",
            "m4s" | "mp4" => "video/mp4",
            "jpg" => "image/jpeg",
            "vtt" => "text/vtt; charset=utf-8",
            other => panic!("unexpected object type {other}: {key}"),
        };
        assert_eq!(content_type, want, "Content-Type of {key}");
    }
}

#[tokio::test]
async fn an_upload_is_published_to_s3_plays_through_signed_links_and_delete_removes_it() {
    let Some(server) = S3Server::start() else { return };
    let app = spawn_app_with(|c| {
        c.ladder = "240,360".parse().unwrap();
        c.storage = s3_app_config(&server, |_| {});
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let clip = clip(dir.path(), "clip.mp4", "640x360", "30", 14, true);
    let started = Instant::now();
    let id = app.upload_ok(&clip).await;
    let doc = app.wait_for(&id, "completed", Duration::from_secs(180)).await;
    eprintln!("S3 e2e: upload to completed in {:.1}s", started.elapsed().as_secs_f64());

    assert_published_exactly(&server, &id, &doc).await;
    let link = doc["videoLink"].as_str().unwrap();
    assert_eq!(link, format!("{}/api/lectures/{id}/master.m3u8", app.base), "signed mode links to the API");
    assert!(
        app.client.get(format!("{}/media/{id}", app.base)).send().await.unwrap().status() == 404,
        "no /media with S3"
    );

    // The media playlists served by the API point at presigned S3 URLs.
    let media = app.client.get(format!("{}/api/lectures/{id}/240p/index.m3u8", app.base)).send().await.unwrap();
    assert_eq!(media.headers()["content-type"], "application/vnd.apple.mpegurl");
    let media = media.text().await.unwrap();
    let init = media.lines().find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\"")).expect("an initialization section");
    assert!(
        init.starts_with(&server.endpoint()) && init.contains("X-Amz-Signature="),
        "signed like the segments: {init}"
    );
    let segment = media.lines().find(|l| l.starts_with("http")).expect("absolute segment URLs");
    assert!(segment.starts_with(&server.endpoint()) && segment.contains("X-Amz-Signature="), "{segment}");
    let unsigned = segment.split('?').next().unwrap();
    assert_eq!(reqwest::get(unsigned).await.unwrap().status(), 403, "the bucket itself is private");
    let got = reqwest::get(segment).await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "video/mp4");

    // A player follows the master's variants over HTTP.
    let probed = ffprobe_rendition(link).await;
    assert!(probed.has_audio && probed.height > 0, "{probed:?}");
    assert!((probed.duration - 14.0).abs() < 1.0, "{probed:?}");
    for name in renditions(&doc) {
        let p = ffprobe_rendition(&format!("{}/api/lectures/{id}/{name}/index.m3u8", app.base)).await;
        assert_eq!(format!("{}p", p.height), name, "{p:?}");
    }
    let thumb = reqwest::get(doc["thumbnailLink"].as_str().unwrap()).await.unwrap();
    assert_eq!((thumb.status().as_u16(), thumb.headers()["content-type"].to_str().unwrap()), (200, "image/jpeg"));

    // Seek previews through the API: the cues as stored, the sprite by a
    // signed redirect (what the cues' relative references resolve to).
    let storyboard = doc["storyboardLink"].as_str().unwrap();
    assert_eq!(storyboard, format!("{}/api/lectures/{id}/storyboard.vtt", app.base));
    let cues = reqwest::get(storyboard).await.unwrap();
    assert_eq!(cues.headers()["content-type"], "text/vtt; charset=utf-8");
    assert!(cues.text().await.unwrap().contains("\nstoryboard.jpg#xywh=0,0,160,90\n"));
    let sprite = reqwest::get(storyboard.replace(".vtt", ".jpg")).await.unwrap();
    assert!(sprite.url().as_str().contains("X-Amz-Signature="), "redirected to a signed URL: {}", sprite.url());
    assert_eq!((sprite.status().as_u16(), sprite.headers()["content-type"].to_str().unwrap()), (200, "image/jpeg"));

    // Captions added later are published to the bucket and served like a
    // rendition: segments signed.
    let form = reqwest::multipart::Form::new()
        .part(
            "captions",
            reqwest::multipart::Part::bytes(b"WEBVTT\n\n00:01.000 --> 00:02.500\nHi\n".to_vec()).file_name("en.vtt"),
        )
        .text("captionsLanguage", "en");
    let stored =
        app.client.post(format!("{}/api/lectures/{id}/captions", app.base)).multipart(form).send().await.unwrap();
    assert_eq!(stored.status(), 201);
    let stored: Value = stored.json().await.unwrap();
    let captions = format!("{}/api/lectures/{id}/captions-en/index.m3u8", app.base);
    assert_eq!(stored["link"], captions.as_str());
    let master = app.client.get(link).send().await.unwrap().text().await.unwrap();
    assert!(master.contains("URI=\"captions-en/index.m3u8\"") && master.contains("SUBTITLES=\"subs\""), "{master}");
    let playlist = app.client.get(&captions).send().await.unwrap().text().await.unwrap();
    let vtt = playlist.lines().find(|l| l.starts_with("http")).expect("signed caption segments");
    assert!(vtt.starts_with(&server.endpoint()) && vtt.contains("X-Amz-Signature="), "{vtt}");
    let got = reqwest::get(vtt).await.unwrap();
    assert_eq!(got.headers()["content-type"], "text/vtt; charset=utf-8");
    assert!(got.text().await.unwrap().contains("00:00:01.000 --> 00:00:02.500\nHi"));
    let doc = app.wait_for(&id, "completed", Duration::from_secs(1)).await;
    assert_published_exactly(&server, &id, &doc).await;

    assert!(files_under(&app.data_dir.path().join("work")).is_empty(), "work files removed");
    assert!(!app.data_dir.path().join("media").exists(), "nothing published to the local disk");

    let response = app.client.delete(format!("{}/api/lectures/{id}", app.base)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(server.objects().await.is_empty(), "delete leaves no objects: {:?}", server.objects().await);
}

#[tokio::test]
async fn publishing_survives_the_s3_server_going_away_for_ten_seconds() {
    let Some(mut server) = S3Server::start() else { return };
    let app = spawn_app_with(|c| {
        c.ladder = "240,360".parse().unwrap();
        c.storage = s3_app_config(&server, |s3| s3.retry_budget = Duration::from_secs(60));
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let clip = clip(dir.path(), "clip.mp4", "640x360", "30", 40, true);
    let started = Instant::now();
    let id = app.upload_ok(&clip).await;

    // Wait until publishing has begun, then pull the server away.
    let deadline = Instant::now() + Duration::from_secs(120);
    let published_before_outage = loop {
        let published = server.objects().await.iter().filter(|k| k.ends_with(".m4s")).count();
        if published > 0 {
            break published;
        }
        let doc = app.lecture(&id).await;
        assert!(doc["processingStatus"] == "pending" || doc["processingStatus"] == "processing", "{doc}");
        assert!(Instant::now() < deadline, "no segment published within 120s: {doc}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    server.stop();
    let stopped_at = Instant::now();
    let during = app.lecture(&id).await;
    assert_eq!(during["processingStatus"], "processing", "stopped mid-job: {during}");
    // The outage itself: ten seconds with no S3.
    tokio::time::sleep(Duration::from_secs(10)).await;
    server.resume(SECRET_KEY);
    eprintln!("S3 outage: {:.1}s", stopped_at.elapsed().as_secs_f64());

    let doc = app.wait_for(&id, "completed", Duration::from_secs(180)).await;
    eprintln!("S3 outage test: upload to completed in {:.1}s", started.elapsed().as_secs_f64());
    assert_eq!(doc["attempts"], 1, "the upload was retried, not the transcode: {doc}");
    assert_published_exactly(&server, &id, &doc).await;
    let segments = server.objects().await.iter().filter(|k| k.ends_with(".m4s")).count();
    assert!(
        segments > published_before_outage,
        "publishing went on after the outage: {published_before_outage} then {segments}"
    );
    let probed = ffprobe_rendition(doc["videoLink"].as_str().unwrap()).await;
    assert!((probed.duration - 40.0).abs() < 1.0, "the whole video plays: {probed:?}");
    eventually("work files removed", Duration::from_secs(5), || {
        files_under(&app.data_dir.path().join("work")).is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_wrong_secret_key_fails_start_up_and_a_running_job_clearly() {
    let Some(mut server) = S3Server::start() else { return };

    // At start-up: one line that says what to fix.
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = test_config(data_dir.path());
    config.storage = s3_app_config(&server, |s3| s3.secret_access_key = Some("not-the-key".into()));
    let e = Application::build(config, Role::Serve).await.err().expect("start-up fails").to_string();
    assert!(e.contains("refused the credentials") && e.contains("AWS_SECRET_ACCESS_KEY"), "{e}");
    assert!(!e.contains('\n'), "{e}");

    // While a job runs: the key is rotated on the server under it.
    let app = spawn_app_with(|c| {
        c.attempts = 1;
        c.ladder = "240".parse().unwrap();
        c.storage = s3_app_config(&server, |_| {});
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let clip = clip(dir.path(), "clip.mp4", "640x360", "30", 30, true);
    let id = app.upload_ok(&clip).await;
    app.wait_for(&id, "processing", Duration::from_secs(60)).await;
    server.resume("rotated-secret");
    let started = Instant::now();
    let doc = app.wait_for(&id, "failed", Duration::from_secs(120)).await;
    let error = doc["processingError"].as_str().unwrap_or_default();
    eprintln!("refused credentials: job failed {:.1}s after the key changed: {error}", started.elapsed().as_secs_f64());
    // Clients see the reason without the endpoint; operators get it whole.
    assert!(!error.contains(&server.endpoint()) && error.contains("<url>"), "no endpoint for clients: {error}");
    assert!(error.contains("SignatureDoesNotMatch"), "names the S3 error: {error}");
    assert!(error.contains("AWS_SECRET_ACCESS_KEY"), "says what to fix: {error}");
    let listed = std::process::Command::new(env!("CARGO_BIN_EXE_vidpipe"))
        .args(["queue", "list", "--state", "failed", "--json"])
        .env("VIDPIPE_DATA_DIR", app.data_dir.path())
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains(&server.endpoint()), "operators see the endpoint: {listed}");
    eventually("work files removed", Duration::from_secs(10), || {
        files_under(&app.data_dir.path().join("work")).is_empty()
    })
    .await;
}
