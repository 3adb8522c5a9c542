//! Captions: from the upload form, from subtitle streams inside the video
//! (MP4 mov_text; Matroska SubRip, ASS and WebVTT), and added or replaced
//! later, all published as HLS subtitles renditions that players read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

/// One frame at 30 fps: the most a cue time may move.
const FRAME: f64 = 1.0 / 30.0;
const EN_SRT: &str = "1\n00:00:01,000 --> 00:00:03,000\nHello from the form\n\n\
    2\n00:00:05,500 --> 00:00:08,000\nThis one spans a segment boundary\n\n\
    3\n00:00:09,033 --> 00:00:11,966\nOdd milliseconds\n";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A 12 s clip with sound and the given subtitle files muxed in as streams
/// (`codec`, language tag, file).
fn with_subtitles(dir: &Path, name: &str, streams: &[(&str, &str, &Path)]) -> PathBuf {
    let out = dir.join(name);
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30:duration=12"]);
    cmd.args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=12"]);
    for (_, _, file) in streams {
        cmd.arg("-i").arg(file);
    }
    cmd.args(["-map", "0", "-map", "1"]);
    for i in 0..streams.len() {
        cmd.args(["-map", &(i + 2).to_string()]);
    }
    cmd.args(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac"]);
    for (i, (codec, language, _)) in streams.iter().enumerate() {
        cmd.args([
            format!("-c:s:{i}"),
            codec.to_string(),
            format!("-metadata:s:s:{i}"),
            format!("language={language}"),
        ]);
    }
    assert!(cmd.arg(&out).status().unwrap().success(), "could not make {name}");
    out
}

async fn upload_with(app: &TestApp, video: &Path, extra: Form) -> reqwest::Response {
    let mut form = reqwest::multipart::Form::new()
        .text("courseId", "c")
        .text("nameOfTopic", "captions")
        .part("uploadedFile", reqwest::multipart::Part::bytes(std::fs::read(video).unwrap()).file_name("v.mp4"));
    for (name, part) in extra {
        form = form.part(name.to_string(), part);
    }
    app.client.post(format!("{}/api/upload", app.base)).multipart(form).send().await.unwrap()
}

/// Extra parts of an upload form.
type Form = Vec<(&'static str, reqwest::multipart::Part)>;

fn text(value: &str) -> reqwest::multipart::Part {
    reqwest::multipart::Part::text(value.to_string())
}

fn file(bytes: &[u8], name: &str) -> reqwest::multipart::Part {
    reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(name.to_string())
}

async fn post_captions(app: &TestApp, id: &str, bytes: &[u8], language: &str) -> (u16, Value) {
    let form =
        reqwest::multipart::Form::new().part("captions", file(bytes, "c.vtt")).part("captionsLanguage", text(language));
    let response =
        app.client.post(format!("{}/api/lectures/{id}/captions", app.base)).multipart(form).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// `(start, end)` of every cue ffprobe reads through a subtitles playlist,
/// each once (a cue repeated in the segments it spans is one cue).
fn cue_times(playlist: &str) -> Vec<(f64, f64)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "packet=pts_time,duration_time", "-of", "csv=p=0", playlist])
        .output()
        .unwrap();
    assert!(out.status.success(), "ffprobe {playlist}: {}", String::from_utf8_lossy(&out.stderr));
    let mut cues: Vec<(f64, f64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (start, duration) = l.split_once(',')?;
            let (start, duration): (f64, f64) = (start.parse().ok()?, duration.parse().ok()?);
            Some((start, start + duration))
        })
        .collect();
    cues.dedup_by(|a, b| (a.0 - b.0).abs() < 1e-6 && (a.1 - b.1).abs() < 1e-6);
    cues
}

fn assert_times(playlist: &str, expected: &[(f64, f64)]) {
    let got = cue_times(playlist);
    assert_eq!(got.len(), expected.len(), "{playlist}: {got:?} vs {expected:?}");
    for (g, e) in got.iter().zip(expected) {
        assert!((g.0 - e.0).abs() <= FRAME && (g.1 - e.1).abs() <= FRAME, "{playlist}: {got:?} vs {expected:?}");
    }
}

async fn get_text(url: &str) -> String {
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    response.text().await.unwrap()
}

/// Every segment of a subtitles playlist, joined.
async fn all_cue_text(playlist_url: &str) -> String {
    let playlist = get_text(playlist_url).await;
    let base = playlist_url.rsplit_once('/').unwrap().0;
    let mut all = String::new();
    for segment in playlist.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        all.push_str(&get_text(&format!("{base}/{segment}")).await);
    }
    all
}

fn durations(playlist: &str) -> Vec<String> {
    playlist.lines().filter(|l| l.starts_with("#EXTINF:")).map(str::to_string).collect()
}

fn languages(doc: &Value) -> BTreeSet<String> {
    doc["captions"].as_array().unwrap().iter().map(|c| c["language"].as_str().unwrap().to_string()).collect()
}

fn caption_link(doc: &Value, language: &str) -> String {
    let track = doc["captions"].as_array().unwrap().iter().find(|c| c["language"] == language);
    track.unwrap_or_else(|| panic!("no {language} captions: {doc}"))["link"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captions_from_the_form_and_the_video_become_subtitles_renditions_that_play() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let fr = write(dir.path(), "fr.vtt", "WEBVTT\n\n00:02.000 --> 00:04.000\nBonjour\n");
    let en_inside = write(dir.path(), "en.vtt", "WEBVTT\n\n00:01.000 --> 00:02.000\nthe English stream inside\n");
    let video = with_subtitles(dir.path(), "v.mp4", &[("mov_text", "fre", &fr), ("mov_text", "eng", &en_inside)]);
    let response = upload_with(
        &app,
        &video,
        vec![("captions", file(EN_SRT.as_bytes(), "en.srt")), ("captionsLanguage", text("en"))],
    )
    .await;
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["lectureId"].as_str().unwrap().to_string();
    let doc = app.wait_for(&id, "completed", Duration::from_secs(120)).await;
    assert_eq!(languages(&doc), BTreeSet::from(["en".into(), "fr".into()]), "{doc}");
    let en = doc["captions"].as_array().unwrap().iter().find(|c| c["language"] == "en").unwrap().clone();
    assert_eq!(en["label"], "English");

    // The master names both, and every variant names the group.
    let master_url = doc["videoLink"].as_str().unwrap();
    let master = get_text(master_url).await;
    assert_eq!(master.matches("#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subs\"").count(), 2, "{master}");
    let variants: Vec<&str> = master.lines().filter(|l| l.starts_with("#EXT-X-STREAM-INF:")).collect();
    assert_eq!(variants.len(), doc["renditions"].as_array().unwrap().len());
    assert!(variants.iter().all(|v| v.ends_with(",SUBTITLES=\"subs\"")), "{master}");

    // Cue times survive, segments follow the video's, and the form's file
    // won over the stream of the same language.
    let en_link = caption_link(&doc, "en");
    assert_times(&en_link, &[(1.0, 3.0), (5.5, 8.0), (9.033, 11.966)]);
    assert_times(&caption_link(&doc, "fr"), &[(2.0, 4.0)]);
    let video_playlist = get_text(
        &master_url.replace("master.m3u8", &format!("{}/index.m3u8", doc["renditions"][0]["name"].as_str().unwrap())),
    )
    .await;
    assert_eq!(durations(&get_text(&en_link).await), durations(&video_playlist), "same segment boundaries");
    let en_text = all_cue_text(&en_link).await;
    assert!(en_text.contains("Hello from the form") && !en_text.contains("the English stream inside"), "{en_text}");
    assert!(en_text.contains("X-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000"));

    // A master with captions still plays, subtitles included.
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i", master_url, "-map", "0", "-f", "null", "-"])
        .output()
        .unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));

    // Later: a new language is published at once; a replaced one too.
    let (status, body) = post_captions(&app, &id, b"WEBVTT\n\n00:00:06.000 --> 00:00:07.500\nGuten Tag\n", "DE").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!((body["language"].as_str(), body["label"].as_str()), (Some("de"), Some("German")));
    let de_link = body["link"].as_str().unwrap().to_string();
    assert_times(&de_link, &[(6.0, 7.5)]);
    let master = get_text(master_url).await;
    assert_eq!(master.matches("TYPE=SUBTITLES").count(), 3, "{master}");
    // Announced: the first `lecture.captions` is this one (completing the
    // video announced its tracks in `lecture.completed`).
    let events = format!("{}/api/lectures/{id}/events", app.base);
    let seen = crate::operations::read_events(&events, Some(0), |e| e.kind == "lecture.captions").await;
    let captions = &seen.last().unwrap().data["data"]["captions"];
    let announced: Vec<&str> = captions.as_array().unwrap().iter().map(|c| c["language"].as_str().unwrap()).collect();
    assert_eq!(announced, ["de", "en", "fr"], "{captions}");
    let completed = seen.iter().find(|e| e.kind == "lecture.completed").expect("completed before");
    assert_eq!(completed.data["data"]["captions"].as_array().unwrap().len(), 2, "{}", completed.data);
    assert_eq!(seen.iter().filter(|e| e.kind == "lecture.captions").count(), 1, "only the change is announced");
    assert!(master.contains("LANGUAGE=\"de\""), "{master}");
    let (status, _) = post_captions(&app, &id, b"1\n00:00:02,000 --> 00:00:03,000\nReplaced\n", "en").await;
    assert_eq!(status, 200);
    let en_text = all_cue_text(&en_link).await;
    assert!(en_text.contains("Replaced") && !en_text.contains("Hello from the form"), "{en_text}");
    assert_times(&en_link, &[(2.0, 3.0)]);
    let doc = app.lecture(&id).await;
    assert_eq!(languages(&doc), BTreeSet::from(["de".into(), "en".into(), "fr".into()]), "{doc}");
    assert_eq!(get_text(master_url).await.matches("TYPE=SUBTITLES").count(), 3, "replacing adds no track");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matroska_subrip_ass_and_webvtt_streams_become_captions() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let srt = write(dir.path(), "a.srt", "1\n00:00:01,000 --> 00:00:03,000\nHallo\n");
    let vtt = write(dir.path(), "b.vtt", "WEBVTT\n\n00:04.250 --> 00:06.000\nCiao\n");
    let video =
        with_subtitles(dir.path(), "v.mkv", &[("subrip", "ger", &srt), ("ass", "spa", &srt), ("webvtt", "ita", &vtt)]);
    let id = app.upload_ok(&video).await;
    let doc = app.wait_for(&id, "completed", Duration::from_secs(120)).await;
    assert_eq!(languages(&doc), BTreeSet::from(["de".into(), "es".into(), "it".into()]), "{doc}");
    assert_times(&caption_link(&doc, "de"), &[(1.0, 3.0)]);
    assert_times(&caption_link(&doc, "es"), &[(1.0, 3.0)]);
    assert_times(&caption_link(&doc, "it"), &[(4.25, 6.0)]);
    assert!(all_cue_text(&caption_link(&doc, "es")).await.contains("Hallo"), "ASS text survives, styling goes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_captions_are_refused_and_nothing_is_created() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let video = clip(dir.path(), "v.mp4", "320x180", "30", 2, false);
    let backwards = b"WEBVTT\n\n00:05.000 --> 00:01.000\nbackwards\n".as_slice();
    let good = b"WEBVTT\n\n00:00.500 --> 00:01.000\nfine\n".as_slice();
    let huge = vec![b'a'; 1024 * 1024 + 1];
    let cases: Vec<(Form, u16, &str)> = vec![
        (vec![("captions", file(backwards, "c.vtt")), ("captionsLanguage", text("en"))], 422, "line 3: the cue ends"),
        (vec![("captions", file(b"\xff\xfe\x00garbage", "c.srt")), ("captionsLanguage", text("en"))], 422, "not UTF-8"),
        (vec![("captions", file(b"just words", "c.txt")), ("captionsLanguage", text("en"))], 422, "neither WebVTT"),
        (vec![("captions", file(good, "c.vtt")), ("captionsLanguage", text("klingon"))], 400, "unknown language tag"),
        (
            vec![("captions", file(&huge, "c.vtt")), ("captionsLanguage", text("en"))],
            413,
            "larger than the limit of 1048576",
        ),
        (vec![("captions", file(good, "c.vtt"))], 400, "missing field `captionsLanguage`"),
        (vec![("captionsLanguage", text("en"))], 400, "missing field `captions`"),
        (vec![("thumbnailTime", text("soon"))], 400, "`thumbnailTime` must be a number of seconds"),
        (vec![("thumbnailTime", text("2.5"))], 400, "past the end of the video (2.0 s long)"),
    ];
    for (extra, status, message) in cases {
        let response = upload_with(&app, &video, extra).await;
        assert_eq!(response.status().as_u16(), status, "{message}");
        let body: Value = response.json().await.unwrap();
        assert!(body["message"].as_str().unwrap().contains(message), "{message}: {body}");
    }
    let list: Value = app.client.get(format!("{}/api/lectures", app.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["total"], 0, "no lecture created half-way: {list}");
    assert!(files_under(&app.uploads_dir()).is_empty(), "no file left: {:?}", files_under(&app.uploads_dir()));

    // The same rules later, and a refused file changes nothing.
    let response =
        upload_with(&app, &video, vec![("captions", file(good, "c.vtt")), ("captionsLanguage", text("en"))]).await;
    assert_eq!(response.status(), 202, "the same upload with good captions is taken");
    let id = response.json::<Value>().await.unwrap()["lectureId"].as_str().unwrap().to_string();
    let doc = app.wait_for(&id, "completed", Duration::from_secs(60)).await;
    assert_eq!(languages(&doc), BTreeSet::from(["en".into()]));
    let before = all_cue_text(&caption_link(&doc, "en")).await;
    assert_eq!(post_captions(&app, &id, backwards, "en").await.0, 422);
    assert_eq!(post_captions(&app, &id, good, "xx").await.0, 400);
    assert_eq!(post_captions(&app, "0123456789abcdef0123456789abcdef", good, "en").await.0, 404);
    assert_eq!(all_cue_text(&caption_link(&doc, "en")).await, before, "the published track is untouched");
    assert_eq!(languages(&app.lecture(&id).await), BTreeSet::from(["en".into()]));
}
