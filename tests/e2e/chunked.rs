//! Chunked transcoding: a long lecture split into chunk jobs that several
//! workers encode at once, joined into one ladder without re-encoding.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use vidpipe::media::MediaInfo;
use vidpipe::transcode::chunks::{ChunkRange, Chunking};
use vidpipe::transcode::ffmpeg::Watchdog;
use vidpipe::transcode::plan::{Ladder, Plan};
use vidpipe::transcode::Transcoder;

use crate::helpers::*;

const FPS: f64 = 30.0;

/// Every packet time of the first video stream of `url`, sorted.
async fn video_times(url: &str) -> Vec<f64> {
    let out = tokio::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time", "-of", "csv=p=0", url])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "ffprobe {url}: {}", String::from_utf8_lossy(&out.stderr));
    let mut times: Vec<f64> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().trim_end_matches(',').parse().ok()).collect();
    times.sort_by(f64::total_cmp);
    times
}

async fn text(api: &Api, url: &str) -> String {
    let response = api.client.get(url).send().await.unwrap();
    assert!(response.status().is_success(), "GET {url}: {}", response.status());
    response.text().await.unwrap()
}

/// Segment start times of a media playlist, from its EXTINF durations.
fn boundaries(playlist: &str) -> Vec<String> {
    let mut at = 0.0;
    let mut starts = Vec::new();
    for d in playlist.lines().filter_map(|l| l.strip_prefix("#EXTINF:")) {
        starts.push(format!("{at:.3}"));
        at += d.trim_end_matches(',').parse::<f64>().unwrap();
    }
    starts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_lecture_is_encoded_in_chunks_by_several_workers_and_plays_as_one() {
    let app = spawn_app_with(|c| {
        c.chunking = Chunking::new(Some(Duration::from_secs(60)), 18).unwrap();
        c.concurrency = 2;
        c.ladder = "240,360".parse().unwrap();
    })
    .await;
    let seconds = 180;
    let source = clip(app.data_dir.path(), "long.mp4", "640x360", "30", seconds, true);
    let id = app.upload_ok(&source).await;

    // The chunks are jobs of their own, and two run at once.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen_active = HashSet::new();
    let mut most_at_once = 0;
    let mut playable_while_processing = false;
    loop {
        let page: serde_json::Value =
            app.client.get(format!("{}/api/jobs?state=active&limit=100", app.base)).send().await.unwrap().json().await.unwrap();
        let chunks: Vec<String> = page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .filter(|j| j.starts_with(&format!("{id}.c")))
            .collect();
        most_at_once = most_at_once.max(chunks.len());
        seen_active.extend(chunks);
        let doc = app.lecture(&id).await;
        if doc["processingStatus"] == "processing" && doc["videoLink"].is_string() {
            playable_while_processing = true;
        }
        if doc["processingStatus"] == "completed" {
            break;
        }
        assert_ne!(doc["processingStatus"], "failed", "{doc}");
        assert!(Instant::now() < deadline, "not completed in time: {doc}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(seen_active.len() >= 5, "chunk jobs seen running: {seen_active:?}");
    assert_eq!(most_at_once, 2, "two workers' slots encode chunks at once");
    assert!(playable_while_processing, "the lecture plays once its first chunks are published");

    let doc = app.lecture(&id).await;
    let master_url = doc["videoLink"].as_str().unwrap().to_string();
    let master = text(&app.api, &master_url).await;
    assert!(master.contains("#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\""), "{master}");
    let variants = variants(&master);
    assert_eq!(variants.len(), 2, "{master}");
    assert!(variants.iter().all(|(attributes, _)| attributes.contains("AUDIO=\"audio\"")), "{master}");

    // Every rendition: one initialization section, the same segment
    // boundaries, every frame once with no gap or overlap at chunk
    // boundaries, and the source's length to a frame.
    let base = master_url.trim_end_matches("master.m3u8");
    let mut rendition_boundaries = Vec::new();
    for (_, uri) in &variants {
        let url = format!("{base}{uri}");
        let playlist = text(&app.api, &url).await;
        assert!(playlist.contains("#EXT-X-PLAYLIST-TYPE:VOD") && playlist.contains("#EXT-X-ENDLIST"));
        assert_eq!(playlist.matches("#EXT-X-MAP:").count(), 1, "{playlist}");
        assert!(playlist.contains("c0009_"), "segments of the tenth chunk: {playlist}");
        rendition_boundaries.push(boundaries(&playlist));
        let times = video_times(&url).await;
        assert_eq!(times.len(), seconds as usize * FPS as usize, "{url}: every frame once");
        let steps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        let worst = steps.iter().map(|s| (s - 1.0 / FPS).abs()).fold(0.0, f64::max);
        assert!(worst < 0.002, "{url}: frame spacing off by {worst:.4}s somewhere (a gap or overlap at a boundary)");
        let span = times.last().unwrap() - times.first().unwrap() + 1.0 / FPS;
        assert!((span - seconds as f64).abs() <= 1.0 / FPS + 1e-6, "{url}: {span}s of video");
    }
    assert_eq!(rendition_boundaries[0], rendition_boundaries[1], "every rendition switches at the same times");

    // The whole ladder decodes without an error, sound included.
    for (_, uri) in &variants {
        let out = tokio::process::Command::new("ffmpeg")
            .args(["-v", "error", "-i", &format!("{base}{uri}"), "-f", "null", "-"])
            .output()
            .await
            .unwrap();
        assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let probed = ffprobe_rendition(&master_url).await;
    assert!(probed.has_audio, "the master plays with sound");
    assert!((probed.duration - seconds as f64).abs() < 0.2, "{}", probed.duration);

    // The chunks' jobs existed (above) and are gone once the lecture is done.
    let all: serde_json::Value =
        app.client.get(format!("{}/api/jobs?limit=100", app.base)).send().await.unwrap().json().await.unwrap();
    let left: Vec<&str> =
        all["jobs"].as_array().unwrap().iter().filter_map(|j| j["id"].as_str()).filter(|j| j.contains('.')).collect();
    assert!(left.is_empty(), "chunk jobs left: {left:?}");
}

/// Proof that one initialization section serves every chunk: each chunk's
/// is the same bytes, even for chunks far apart in the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chunk_writes_the_same_initialization_section() {
    let dir = tempfile::tempdir().unwrap();
    let source = clip(dir.path(), "src.mp4", "640x360", "30", 40, false);
    let media: MediaInfo = vidpipe::ingest::probe::probe(std::path::Path::new("ffprobe"), &source).await.unwrap();
    let plan = Plan::new(&media, &"240,360".parse::<Ladder>().unwrap());
    let transcoder =
        Transcoder { tools: tools(), watchdog: Watchdog { timeout: Duration::from_secs(120), stall: Duration::from_secs(60) } };
    let mut inits = Vec::new();
    for index in [0, 2] {
        let out = dir.path().join(format!("chunk{index}"));
        let range = ChunkRange::new(index, 4, 12);
        let (progress, _) = tokio::sync::watch::channel(0.0);
        let cancel = tokio_util::sync::CancellationToken::new();
        transcoder.encode_chunk(&media, &plan, &range, &source, &out, &cancel, &progress).await.unwrap();
        for (n, r) in plan.renditions.iter().enumerate() {
            let playlist = std::fs::read_to_string(out.join(r.name()).join("index.m3u8")).unwrap();
            assert!(playlist.contains(&format!("c{index:04}_00000.m4s")), "{playlist}");
            inits.push((index, n, std::fs::read(out.join(r.name()).join(format!("init_{n}.mp4"))).unwrap()));
        }
    }
    for n in 0..plan.renditions.len() {
        let of = |chunk| &inits.iter().find(|(i, m, _)| *i == chunk && *m == n).unwrap().2;
        assert!(!of(0).is_empty());
        assert_eq!(of(0), of(2), "rendition {n}: chunk 2's init section differs from chunk 0's");
    }
}
