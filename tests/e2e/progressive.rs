//! Playable early: the lecture is watchable while it is still processing,
//! and a player that starts early plays through to the end.

use std::time::{Duration, Instant};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_started_mid_job_plays_to_the_end() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let seconds = 30.0;
    let clip = clip(dir.path(), "long.mp4", "1280x720", "30", seconds as u32, true);
    let id = app.upload_ok(&clip).await;

    let uploaded = Instant::now();
    let doc = loop {
        let doc = app.lecture(&id).await;
        if doc["playable"] == true {
            break doc;
        }
        assert_eq!(doc["videoLink"], serde_json::Value::Null, "no link before playable: {doc}");
        assert_ne!(doc["processingStatus"], "completed", "completed before it was ever playable early: {doc}");
        assert!(uploaded.elapsed() < Duration::from_secs(60), "never playable: {doc}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(doc["processingStatus"], "processing", "playable while still processing: {doc}");
    eprintln!("playable {:?} after upload", uploaded.elapsed());
    let master_url = doc["videoLink"].as_str().unwrap().to_string();
    let master = app.client.get(&master_url).send().await.unwrap().text().await.unwrap();
    assert_eq!(variants(&master).len(), 3, "the early master lists the whole ladder: {master}");
    let media_url = master_url.replace("master.m3u8", "240p/index.m3u8");
    let early = app.client.get(&media_url).send().await.unwrap().text().await.unwrap();
    assert!(early.contains("#EXT-X-PLAYLIST-TYPE:EVENT") && !early.contains("#EXT-X-ENDLIST"), "{early}");

    // A player that starts now follows the EVENT playlist until ENDLIST.
    let out = dir.path().join("watched.ts");
    let player = tokio::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-live_start_index",
            "0",
            "-i",
            &media_url,
            "-map",
            "0",
            "-c",
            "copy",
            "-f",
            "mpegts",
        ])
        .arg(&out)
        .output();
    let played = tokio::time::timeout(Duration::from_secs(180), player).await.expect("player finished").unwrap();
    assert!(played.status.success(), "{}", String::from_utf8_lossy(&played.stderr));
    // ENDLIST is published just before the job is marked completed.
    let doc = app.wait_for(&id, "completed", Duration::from_secs(30)).await;
    assert_eq!(doc["videoLink"].as_str().unwrap(), master_url, "the early link stays valid");
    let probed = ffprobe_rendition(out.to_str().unwrap()).await;
    assert!((probed.duration - seconds).abs() < 1.0, "played {} s of {seconds} s", probed.duration);
    let vod = app.client.get(&media_url).send().await.unwrap().text().await.unwrap();
    assert!(vod.contains("#EXT-X-PLAYLIST-TYPE:VOD") && vod.contains("#EXT-X-ENDLIST"), "{vod}");
}
