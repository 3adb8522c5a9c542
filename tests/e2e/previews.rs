//! The thumbnail and seek previews: a default thumbnail that is not black
//! or mid-transition, one at the time asked for, and a storyboard whose
//! tiles show the video at their cues' times.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

/// 10 s of a still test card at 30 fps: black until 2.5 s, fading in
/// until 3.5 s, then still. Thumbnail candidates are at 1, 1.5, 2, 3, 4
/// and 5 s: three black ones, one mid-fade, then the card.
fn fade_in(dir: &Path) -> PathBuf {
    let out = dir.join("fade.mp4");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "smptebars=size=640x360:rate=30:duration=10"])
        .args(["-vf", "fade=t=in:st=2.5:d=1", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    out
}

/// Mean luma (0-255) of an image, or of the `w`x`h` tile at `x`,`y` in it.
pub(crate) fn mean_luma(image: &str, tile: Option<(u32, u32, u32, u32)>) -> f64 {
    let crop = tile.map_or(String::new(), |(x, y, w, h)| format!("crop={w}:{h}:{x}:{y},"));
    let out = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-i",
            image,
            "-vf",
            &format!("{crop}signalstats,metadata=print:file=-"),
            "-f",
            "null",
            "-",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let value = text.lines().find_map(|l| l.strip_prefix("lavfi.signalstats.YAVG="));
    value.unwrap_or_else(|| panic!("no YAVG for {image}: {text}")).parse().unwrap()
}

pub(crate) fn image_size(url: &str) -> (u32, u32) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=width,height", "-of", "csv=p=0", url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (w, h) = text.trim().split_once(',').unwrap_or_else(|| panic!("no size for {url}: {text}"));
    (w.parse().unwrap(), h.parse().unwrap())
}

/// `(start, end, x, y, w, h)` of each storyboard cue.
pub(crate) fn storyboard_cues(vtt: &str) -> Vec<(f64, f64, u32, u32, u32, u32)> {
    let seconds = |t: &str| {
        let parts: Vec<f64> = t.split(':').map(|p| p.parse().unwrap()).collect();
        parts.iter().fold(0.0, |acc, p| acc * 60.0 + p)
    };
    let lines: Vec<&str> = vtt.lines().collect();
    lines
        .windows(2)
        .filter_map(|w| {
            let (start, end) = w[0].split_once(" --> ")?;
            let xywh = w[1].strip_prefix("storyboard.jpg#xywh=")?;
            let n: Vec<u32> = xywh.split(',').map(|v| v.parse().unwrap()).collect();
            Some((seconds(start), seconds(end), n[0], n[1], n[2], n[3]))
        })
        .collect()
}

pub(crate) async fn upload(app: &TestApp, video: &Path, thumbnail_time: Option<&str>) -> String {
    let mut form = reqwest::multipart::Form::new()
        .text("courseId", "c")
        .text("nameOfTopic", "previews")
        .part("uploadedFile", reqwest::multipart::Part::bytes(std::fs::read(video).unwrap()).file_name("v.mp4"));
    if let Some(t) = thumbnail_time {
        form = form.text("thumbnailTime", t.to_string());
    }
    let response = app.client.post(format!("{}/api/upload", app.base)).multipart(form).send().await.unwrap();
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["lectureId"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_thumbnail_skips_black_and_fading_frames_unless_a_time_is_asked_for() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let video = fade_in(dir.path());
    // The source really is black at 10%, mid-fade at 30% and bright at 40%.
    let source = video.to_str().unwrap();
    let frame_luma = |t: f64| {
        let still = dir.path().join(format!("at-{t}.png"));
        let status = Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-i", source, "-vf", &format!("select=eq(n\\,{})", (t * 30.0) as u32)])
            .args(["-frames:v", "1"])
            .arg(&still)
            .status()
            .unwrap();
        assert!(status.success());
        mean_luma(still.to_str().unwrap(), None)
    };
    let (at_1, at_3, at_4) = (frame_luma(1.0), frame_luma(3.0), frame_luma(4.0));
    assert!(at_1 < 20.0 && at_3 > at_1 + 20.0 && at_4 > at_3 + 20.0, "{at_1} {at_3} {at_4}");

    let id = upload(&app, &video, None).await;
    let doc = app.wait_for(&id, "completed", Duration::from_secs(60)).await;
    assert_eq!(doc["thumbnailTime"], 4.0, "the first still, bright candidate: {doc}");
    let default = mean_luma(doc["thumbnailLink"].as_str().unwrap(), None);
    assert!((default - at_4).abs() < 8.0, "the thumbnail is the frame at 4 s: {default} vs {at_4}");

    let id = upload(&app, &video, Some("1")).await;
    let doc = app.wait_for(&id, "completed", Duration::from_secs(60)).await;
    assert_eq!(doc["thumbnailTime"], 1.0, "{doc}");
    let asked = mean_luma(doc["thumbnailLink"].as_str().unwrap(), None);
    assert!(asked < 20.0, "the frame asked for, black as it is: {asked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storyboard_has_a_tile_for_every_interval_showing_that_moment() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let id = upload(&app, &fade_in(dir.path()), None).await;
    let doc = app.wait_for(&id, "completed", Duration::from_secs(60)).await;
    let vtt_url = doc["storyboardLink"].as_str().expect("a storyboard").to_string();
    let response = reqwest::get(&vtt_url).await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/vtt; charset=utf-8");
    let vtt = response.text().await.unwrap();
    assert!(vtt.starts_with("WEBVTT\n"), "{vtt}");
    let cues = storyboard_cues(&vtt);
    let sprite = vtt_url.replace("storyboard.vtt", "storyboard.jpg");
    let (width, height) = image_size(&sprite);
    // One tile every 2 s, back to back from 0 to the end, inside the sprite.
    assert_eq!(cues.len(), 5, "{vtt}");
    let duration = doc["durationSeconds"].as_f64().unwrap();
    for (i, cue) in cues.iter().enumerate() {
        assert_eq!(cue.0, 2.0 * i as f64, "{vtt}");
        let expected_end = (2.0 * (i + 1) as f64).min(duration);
        assert!((cue.1 - expected_end).abs() < 0.05, "{vtt}");
        assert!(cue.2 + cue.4 <= width && cue.3 + cue.5 <= height, "tile {i} inside {width}x{height}: {vtt}");
        assert_eq!((cue.4, cue.5), (160, 90), "16:9 tiles 160 px wide");
    }
    // The first tile is black (0 s), the last bright (8 s).
    let luma = |c: &(f64, f64, u32, u32, u32, u32)| mean_luma(&sprite, Some((c.2, c.3, c.4, c.5)));
    let (first, last) = (luma(&cues[0]), luma(&cues[4]));
    assert!(first < 20.0 && last > first + 60.0, "tiles show their moments: {first} then {last}");

    // Removed with the lecture.
    let response = app.client.delete(format!("{}/api/lectures/{id}", app.base)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(reqwest::get(&vtt_url).await.unwrap().status(), 404);
    assert_eq!(reqwest::get(&sprite).await.unwrap().status(), 404);
}

/// ffmpeg prints no progress until every output has written its first
/// packet. The thumbnail candidates and the storyboard are outputs too: if
/// one started late (at 10% of the video, or with the sprite at the end),
/// progress would stop for that long and the stall watchdog would kill a
/// long encode. Here the encode runs at real time and the watchdog fires
/// after 2.5 s without progress: a 30 s video only completes if progress
/// flows from its first seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_flows_from_the_first_seconds_so_long_encodes_are_not_taken_for_stalled() {
    let dir = tempfile::tempdir().unwrap();
    let real_time = script(
        dir.path(),
        "real-time-ffmpeg",
        "case \"$*\" in *var_stream_map*) exec ffmpeg -readrate 1 \"$@\";; esac\nexec ffmpeg \"$@\"",
    );
    let app = spawn_app_with(|c| {
        c.tools.ffmpeg = real_time;
        c.stall_timeout = Duration::from_millis(2500);
    })
    .await;
    let id = app.upload_ok(&clip(dir.path(), "long.mp4", "320x180", "30", 30, true)).await;
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let doc = loop {
        let doc = app.lecture(&id).await;
        if doc["processingStatus"] != "processing" && doc["processingStatus"] != "pending" {
            break doc;
        }
        assert!(std::time::Instant::now() < deadline, "not finished within 120 s: {doc}");
        seen.push(doc["progress"].as_u64().unwrap());
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(doc["processingStatus"], "completed", "{doc}");
    assert_eq!(doc["attempts"], 1, "never taken for stalled: {doc}");
    let first = seen.iter().copied().find(|&p| p > 0).expect("progress was reported");
    assert!(first <= 20, "progress reported early, first seen at {first}%: {seen:?}");
    assert!(doc["storyboardLink"].is_string() && doc["thumbnailTime"].is_number(), "{doc}");
}
