//! A lecture's life around the transcode: listing, deletion while ffmpeg
//! runs, media serving, the standalone command.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

/// Processes whose command line mentions `needle` (our ffmpeg runs get the
/// lecture id in their input path).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) && !cmdline.contains("cargo") {
                found.push(cmdline);
            }
        }
    }
    found
}

#[tokio::test]
async fn deleting_a_lecture_being_processed_stops_ffmpeg_and_removes_everything() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let clip = clip(dir.path(), "long.mp4", "1280x720", "30", 40, true);
    let id = app.upload_ok(&clip).await;

    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let doc = app.lecture(&id).await;
        // Playable: segments are published, so the delete has something to remove.
        if doc["processingStatus"] == "processing" && doc["playable"] == true {
            break;
        }
        assert_ne!(doc["processingStatus"], "completed", "clip too short for this test");
        assert!(std::time::Instant::now() < deadline, "never started: {doc}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!processes_mentioning(&id).is_empty(), "ffmpeg is running for the lecture");
    let media = app.data_dir.path().join("media").join(&id);
    assert!(!files_under(&media).is_empty(), "files were published");
    assert_eq!(app.client.get(format!("{}/api/jobs/{id}", app.base)).send().await.unwrap().status(), 200);

    let response = app.client.delete(format!("{}/api/lectures/{id}", app.base)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        processes_mentioning(&id).is_empty(),
        "ffmpeg stopped before the delete answered: {:?}",
        processes_mentioning(&id)
    );

    let response = app.client.get(format!("{}/api/lectures/{id}", app.base)).send().await.unwrap();
    assert_eq!(response.status(), 404);
    eventually("published files removed", Duration::from_secs(5), || !media.exists()).await;
    let job = app.client.get(format!("{}/api/jobs/{id}", app.base)).send().await.unwrap();
    assert_eq!(job.status(), 404, "the job went with the lecture");
    assert!(files_under(&app.uploads_dir()).is_empty());
    eventually("work files removed", Duration::from_secs(5), || {
        files_under(&app.data_dir.path().join("work")).is_empty()
    })
    .await;
    let health: Value =
        app.client.get(format!("{}/api/health/queue", app.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["queue"]["active"], 0, "{health}");
}

#[tokio::test]
async fn lectures_list_newest_first_by_course_with_paging_and_media_serves_ranges() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let clip = clip(dir.path(), "short.mp4", "320x240", "30", 2, true);
    let mut ids = Vec::new();
    for course in ["math", "math", "art"] {
        let response = app.upload_file(&clip, course, "topic").await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        ids.push(body["lectureId"].as_str().unwrap().to_string());
    }
    let page: Value = app
        .client
        .get(format!("{}/api/lectures?courseId=math&limit=1&page=1", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 2, "{page}");
    assert_eq!(page["lectures"].as_array().unwrap().len(), 1);
    assert_eq!(page["lectures"][0]["_id"], ids[1].as_str(), "newest first");
    assert_eq!(page["lectures"][0]["courseId"], "math");
    let page_of = |n: u32| {
        let url = format!("{}/api/lectures?courseId=math&limit=1&page={n}", app.base);
        async move { reqwest::get(url).await.unwrap().json::<Value>().await.unwrap() }
    };
    let second = page_of(2).await;
    assert_eq!(second["lectures"].as_array().unwrap().len(), 1, "{second}");
    assert_eq!(second["lectures"][0]["_id"], ids[0].as_str(), "the older one on page 2");
    let third = page_of(3).await;
    assert_eq!((third["lectures"].as_array().unwrap().len(), third["total"].as_u64()), (0, Some(2)), "{third}");
    for key in [
        "processingStatus",
        "progress",
        "processingError",
        "jobId",
        "attempts",
        "videoLink",
        "thumbnailLink",
        "renditions",
        "durationSeconds",
        "noOfViews",
        "noOfLikes",
        "comments",
        "createdAt",
        "updatedAt",
        "nameOfTopic",
    ] {
        assert!(page["lectures"][0].get(key).is_some(), "field {key} in {page}");
    }
    let bad = app.client.get(format!("{}/api/lectures?limit=1000", app.base)).send().await.unwrap();
    assert_eq!(bad.status(), 400);

    let doc = app.wait_for(&ids[2], "completed", Duration::from_secs(120)).await;
    let master = doc["videoLink"].as_str().unwrap();
    let segment = master
        .replace("master.m3u8", "180p/seg_00000.m4s")
        .replace("180p", doc["renditions"][0]["name"].as_str().unwrap());
    let response = app.client.get(&segment).header("Range", "bytes=4-7").send().await.unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(response.headers()["content-type"], "video/mp4");
    let bytes = response.bytes().await.unwrap();
    assert_eq!(&bytes[..], b"styp", "an fMP4 media segment starts with its segment-type box");

    let media_playlist = app
        .client
        .get(master.replace("master.m3u8", &format!("{}/index.m3u8", doc["renditions"][0]["name"].as_str().unwrap())))
        .send()
        .await
        .unwrap();
    let text = media_playlist.text().await.unwrap();
    assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD") && text.contains("#EXT-X-ENDLIST"), "{text}");
    assert_eq!(text.matches("#EXT-X-PLAYLIST-TYPE").count(), 1, "{text}");
}

#[tokio::test]
async fn the_transcode_command_writes_the_same_layout_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let clip = clip(dir.path(), "in.mp4", "640x360", "30", 3, true);
    let out = dir.path().join("out");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_vidpipe"))
        .arg("transcode")
        .arg(&clip)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("progress"), "{stderr}");
    let master = std::fs::read_to_string(out.join("master.m3u8")).unwrap();
    assert_eq!(variants(&master).len(), 2, "{master}");
    for name in ["240p", "360p"] {
        let probed = ffprobe_rendition(out.join(name).join("index.m3u8").to_str().unwrap()).await;
        assert!((probed.duration - 3.0).abs() < 0.6);
    }
    assert!(out.join("thumbnail.jpg").exists());

    // The same layout, file for file, as a lecture the server published.
    let app = spawn_app().await;
    let id = app.upload_ok(&clip).await;
    let doc = app.wait_for(&id, "completed", Duration::from_secs(60)).await;
    let published = app.data_dir.path().join("media").join(&id);
    let attempt = std::fs::read_dir(&published).unwrap().flatten().next().unwrap().path();
    assert!(doc["videoLink"].as_str().unwrap().contains(&attempt.file_name().unwrap().to_string_lossy().to_string()));
    let layout = |root: &std::path::Path| {
        let mut files: Vec<String> =
            files_under(root).iter().map(|f| f.strip_prefix(root).unwrap().display().to_string()).collect();
        files.sort();
        files
    };
    assert_eq!(layout(&out), layout(&attempt));
    for playlist in ["master.m3u8", "240p/index.m3u8", "360p/index.m3u8"] {
        let (a, b) = (std::fs::read_to_string(out.join(playlist)), std::fs::read_to_string(attempt.join(playlist)));
        assert_eq!(a.unwrap(), b.unwrap(), "{playlist}");
    }
}
