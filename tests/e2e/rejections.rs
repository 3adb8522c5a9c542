//! Bad input gets a clear 4xx, and nothing is created or left behind.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

async fn expect_rejected(app: &TestApp, path: &std::path::Path, status: u16, message_part: &str) {
    let response = app.upload_file(path, "course-1", "topic").await;
    assert_eq!(response.status().as_u16(), status, "{}", path.display());
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(message_part), "`{message}` should say `{message_part}`");
    assert!(!message.contains(&app.data_dir.path().display().to_string()), "no server paths in `{message}`");
}

async fn assert_nothing_created(app: &TestApp) {
    let list: Value = app.client.get(format!("{}/api/lectures", app.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["total"], 0, "{list}");
    assert!(files_under(&app.uploads_dir()).is_empty(), "left behind: {:?}", files_under(&app.uploads_dir()));
    assert!(files_under(&app.data_dir.path().join("media")).is_empty());
}

#[tokio::test]
async fn files_that_are_not_videos_are_refused_with_a_reason() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    std::fs::write(d.join("notes.mp4"), "These are my lecture notes, not a video.\n").unwrap();
    expect_rejected(&app, &d.join("notes.mp4"), 415, "unsupported container: text").await;

    std::fs::write(d.join("empty.mp4"), b"").unwrap();
    expect_rejected(&app, &d.join("empty.mp4"), 422, "file is empty").await;

    // An MP4 cut in half loses its index (moov at the end).
    let whole = clip(d, "whole.mp4", "320x240", "30", 3, true);
    let bytes = std::fs::read(&whole).unwrap();
    std::fs::write(d.join("truncated.mp4"), &bytes[..bytes.len() / 2]).unwrap();
    expect_rejected(&app, &d.join("truncated.mp4"), 422, "not a decodable video").await;

    // Random bytes.
    let noise: Vec<u8> = (0..50_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(d.join("noise.mov"), noise).unwrap();
    let response = app.upload_file(&d.join("noise.mov"), "c", "t").await;
    assert!(matches!(response.status().as_u16(), 415 | 422), "{}", response.status());

    // Audio only: a container we take, with no picture.
    let status = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "sine=duration=2", "-c:a", "aac"])
        .arg(d.join("podcast.m4a"))
        .status()
        .unwrap();
    assert!(status.success());
    expect_rejected(&app, &d.join("podcast.m4a"), 422, "no video stream").await;

    assert_nothing_created(&app).await;
}

/// ffmpeg's HLS and concat demuxers follow references inside a file. An
/// upload that is a playlist pointing at a local file must be refused before
/// anything reads that file, and must never be transcoded. The files they
/// name are FIFOs: opening one blocks, so a refusal within 2 s proves
/// nothing opened them (an HLS or concat demuxer that got to read them
/// would hang until the probe's timeout).
#[tokio::test]
async fn playlists_and_concat_lists_pointing_at_local_files_are_refused() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fifo = |path: &std::path::Path| {
        let c = std::ffi::CString::new(path.display().to_string()).unwrap();
        // SAFETY: a valid C string path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "{}", path.display());
    };
    // `.ts`: the HLS demuxer follows only segment names with a media extension.
    let secret_ts = d.join("secret.ts");
    fifo(&secret_ts);
    let refused_fast = |file: &'static str, status: u16| {
        let (app, path) = (&app, d.join(file));
        async move {
            let started = std::time::Instant::now();
            expect_rejected(app, &path, status, "unsupported container").await;
            assert!(started.elapsed() < Duration::from_secs(2), "{file}: {:?}", started.elapsed());
        }
    };

    let hls = format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nfile://{}\n#EXTINF:2.0,\n{}\n#EXT-X-ENDLIST\n",
        secret_ts.display(),
        secret_ts.display()
    );
    std::fs::write(d.join("evil.mp4"), &hls).unwrap();
    refused_fast("evil.mp4", 415).await;
    std::fs::write(d.join("evil.m3u8"), &hls).unwrap();
    refused_fast("evil.m3u8", 415).await;

    // ffmpeg's concat demuxer refuses absolute paths by itself (`safe`); a
    // relative name next to the list is "safe", so the FIFO sits in the
    // uploads directory, where the list is stored while it is probed.
    std::fs::create_dir_all(app.uploads_dir()).unwrap();
    fifo(&app.uploads_dir().join("secret.ts"));
    std::fs::write(d.join("evil.mov"), "ffconcat version 1.0\nfile 'secret.ts'\n").unwrap();
    refused_fast("evil.mov", 415).await;
    std::fs::remove_file(app.uploads_dir().join("secret.ts")).unwrap();

    assert_nothing_created(&app).await;

    // The standalone command refuses them too, and writes no output.
    let out = d.join("out");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_vidpipe"))
        .arg("transcode")
        .arg(d.join("evil.m3u8"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("unsupported container"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(files_under(&out).is_empty());
}

#[tokio::test]
async fn missing_fields_are_400_and_name_the_field() {
    let app = spawn_app().await;
    let url = format!("{}/api/upload", app.base);
    let part = || reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("a.mp4");
    let cases = [
        (reqwest::multipart::Form::new().text("courseId", "c").text("nameOfTopic", "t"), "uploadedFile"),
        (reqwest::multipart::Form::new().text("nameOfTopic", "t").part("uploadedFile", part()), "courseId"),
        (reqwest::multipart::Form::new().text("courseId", "c").part("uploadedFile", part()), "nameOfTopic"),
    ];
    for (form, field) in cases {
        let response = app.client.post(&url).multipart(form).send().await.unwrap();
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "bad_request");
        assert!(body["message"].as_str().unwrap().contains(field), "{body}");
    }
    let response = app
        .client
        .post(&url)
        .multipart(
            reqwest::multipart::Form::new()
                .text("courseId", "c")
                .text("nameOfTopic", "t")
                .text("priority", "soon")
                .part("uploadedFile", part()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_nothing_created(&app).await;
}

#[tokio::test]
async fn uploads_over_the_limit_are_413_and_leave_no_partial_file() {
    let app = spawn_app_with(|c| c.max_upload_bytes = 200_000).await;
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.mp4");
    std::fs::write(&big, vec![7u8; 600_000]).unwrap();
    let response = app.upload_file(&big, "c", "t").await;
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("200000"), "{body}");

    // Chunked (no Content-Length): caught while streaming.
    let stream = futures::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(vec![7u8; 50_000])));
    let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(stream)).file_name("big.mp4");
    let form =
        reqwest::multipart::Form::new().text("courseId", "c").text("nameOfTopic", "t").part("uploadedFile", part);
    let response = app.client.post(format!("{}/api/upload", app.base)).multipart(form).send().await;
    // The server answers as soon as the limit passes, which can break the
    // client's pipe while it is still sending: that, or the 413, and nothing else.
    match response {
        Ok(response) => assert_eq!(response.status(), 413),
        Err(e) => assert!(e.is_request() && !e.is_connect() && !e.is_timeout(), "not a body-write error: {e:?}"),
    }
    eventually("partial upload removed", Duration::from_secs(5), || files_under(&app.uploads_dir()).is_empty()).await;
    assert_nothing_created(&app).await;
}

#[tokio::test]
async fn unknown_ids_are_404_json() {
    let app = spawn_app().await;
    for path in [
        "/api/lectures/0123456789abcdef0123456789abcdef",
        "/api/lectures/not-an-id",
        "/api/jobs/0123456789abcdef0123456789abcdef",
    ] {
        let response = app.client.get(format!("{}{path}", app.base)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "not_found");
        assert!(body["message"].as_str().unwrap().contains("no "), "{body}");
    }
    let response =
        app.client.delete(format!("{}/api/lectures/0123456789abcdef0123456789abcdef", app.base)).send().await.unwrap();
    assert_eq!(response.status(), 404);
}
