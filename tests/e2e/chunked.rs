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
    let mut times: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect();
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
        let page: serde_json::Value = app
            .client
            .get(format!("{}/api/jobs?state=active&limit=100", app.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
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

    // Each chunk ran once, and its job's record tells so.
    for chunk in &seen_active {
        let job = app.job(chunk).await;
        assert_eq!((job["state"].as_str(), job["attempts"].as_u64()), (Some("completed"), Some(1)), "{job}");
    }
    let retry = app
        .client
        .post(format!("{}/api/jobs/{}/retry", app.base, seen_active.iter().next().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 404, "a chunk is retried through its lecture");
    assert!(retry.text().await.unwrap().contains(&format!("retry or cancel the lecture's job `{id}`")));
}

/// Proof that one initialization section serves every chunk: each chunk's
/// is the same bytes, even for chunks far apart in the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chunk_writes_the_same_initialization_section() {
    let dir = tempfile::tempdir().unwrap();
    let source = clip(dir.path(), "src.mp4", "640x360", "30", 40, false);
    let media: MediaInfo = vidpipe::ingest::probe::probe(std::path::Path::new("ffprobe"), &source).await.unwrap();
    let plan = Plan::new(&media, &"240,360".parse::<Ladder>().unwrap());
    let transcoder = Transcoder {
        tools: tools(),
        watchdog: Watchdog { timeout: Duration::from_secs(120), stall: Duration::from_secs(60) },
        threads: None,
    };
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
        assert!(of(0) == of(2), "rendition {n}: chunk 2's initialization section differs from chunk 0's");
    }
}

/// Every job record, newest first (children included).
async fn all_jobs(api: &Api) -> Vec<serde_json::Value> {
    let page: serde_json::Value =
        api.client.get(format!("{}/api/jobs?limit=100", api.base)).send().await.unwrap().json().await.unwrap();
    page["jobs"].as_array().unwrap().clone()
}

/// The chunk jobs of lecture `id` among `jobs`.
fn chunk_jobs<'a>(jobs: &'a [serde_json::Value], id: &str) -> Vec<&'a serde_json::Value> {
    jobs.iter().filter(|j| j["id"].as_str().unwrap().starts_with(&format!("{id}.c"))).collect()
}

/// ffmpeg processes working for lecture `id`, on any worker of this host
/// (their work directories are named after the chunk's job).
fn encoders_of(id: &str) -> usize {
    encoder_command_lines(id).len()
}

/// Their command lines, arguments joined by spaces.
fn encoder_command_lines(id: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| std::fs::read(p.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.starts_with("ffmpeg") && c.contains(id))
        .collect()
}

/// Files published for lecture `id` on the local disk.
fn published_files(data: &std::path::Path, id: &str) -> Vec<std::path::PathBuf> {
    let dir = data.join("media").join(id);
    if dir.exists() {
        files_under(&dir)
    } else {
        Vec::new()
    }
}

fn chunked_env(port: u16, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("VIDPIPE_LISTEN", format!("127.0.0.1:{port}")),
        ("VIDPIPE_LEASE", "3s".to_string()),
        ("VIDPIPE_CHUNK_AFTER", "30s".to_string()),
        ("VIDPIPE_CHUNK_SECONDS", "12".to_string()),
        ("VIDPIPE_CONCURRENCY", "1".to_string()),
    ];
    env.extend(extra.iter().cloned());
    env
}

/// kill -9 of a worker in the middle of a chunk: that chunk alone is
/// encoded again (by the other worker), the chunks done before are not,
/// and the lecture completes. On PostgreSQL, with two worker processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_chunk_costs_that_chunk_alone() {
    let Some(database_url) = postgres_database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let port = free_port();
    let env = chunked_env(port, &[("DATABASE_URL", database_url), ("VIDPIPE_LADDER", "240,360".into())]);
    let _api_process = Process::start("api", data, &env);
    let api = Api::new(format!("http://127.0.0.1:{port}"));
    wait_until_up(&api.client, &api.base).await;
    let mut first = Process::start("worker", data, &env);
    let source = clip(data, "long.mp4", "640x360", "30", 72, true);
    let id = api.upload_ok(&source).await;
    // The first worker joins the lecture's chunks (and encodes some); the
    // second only starts once it does, so the kill takes the joining job
    // down too, and the second worker must take it over as well.
    let on_first = format!(":{}", first.pid());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(api.job(&id).await["worker"].as_str().is_some_and(|w| w.ends_with(&on_first))) {
        assert!(Instant::now() < deadline, "the first worker never claimed the lecture");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = Process::start("worker", data, &env);

    let deadline = Instant::now() + Duration::from_secs(90);
    let (killed, done_before) = loop {
        let jobs = all_jobs(&api).await;
        let chunks = chunk_jobs(&jobs, &id);
        let running_on_first = chunks
            .iter()
            .find(|j| j["state"] == "active" && j["worker"].as_str().is_some_and(|w| w.ends_with(&on_first)));
        let done: Vec<(String, serde_json::Value)> = chunks
            .iter()
            .filter(|j| j["state"] == "completed")
            .map(|j| (j["id"].as_str().unwrap().to_string(), j["startedAt"].clone()))
            .collect();
        if let (Some(job), false) = (running_on_first, done.is_empty()) {
            break (job["id"].as_str().unwrap().to_string(), done);
        }
        assert!(Instant::now() < deadline, "no chunk running on the first worker after one completed: {jobs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    api.wait_for(&id, "completed", Duration::from_secs(180)).await;
    let parent = api.job(&id).await;
    assert_eq!(parent["attempts"], 2, "the joining job was taken over: {parent}");
    let killed_job = api.job(&killed).await;
    assert_eq!(killed_job["attempts"], 2, "the killed chunk ran again: {killed_job}");
    assert!(killed_job["worker"].as_str().unwrap().ends_with(&format!(":{}", second.pid())), "{killed_job}");
    for (chunk, started) in &done_before {
        let job = api.job(chunk).await;
        assert_eq!(
            (&job["attempts"], &job["startedAt"]),
            (&1.into(), started),
            "a chunk done before the kill ran again: {job}"
        );
    }
    let all = all_jobs(&api).await;
    let chunks = chunk_jobs(&all, &id);
    assert_eq!(chunks.len(), 6, "{all:?}");
    assert!(chunks.iter().all(|j| j["state"] == "completed"), "{chunks:?}");
    let master = api.lecture(&id).await["videoLink"].as_str().unwrap().to_string();
    let probed = ffprobe_rendition(&master).await;
    assert!((probed.duration - 72.0).abs() < 0.2 && probed.has_audio, "{} s", probed.duration);
}

/// A chunk that fails on every attempt fails its lecture with the chunk's
/// reason; the other chunks stop and nothing stays published. On Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_that_fails_for_good_fails_the_lecture_and_leaves_nothing_published() {
    let Some(redis) = RedisServer::start() else { return };
    let url = redis.url();
    let bin = tempfile::tempdir().unwrap();
    // The third chunk (from 24 s) cannot be encoded; everything else can.
    let ffmpeg = script(
        bin.path(),
        "ffmpeg-failing-chunk-3",
        "case \"$*\" in *\"-ss 24.000\"*) echo 'chunk decoder exploded' >&2; exit 1;; esac\nexec ffmpeg \"$@\"",
    );
    let app = spawn_app_with(|c| {
        c.queue_url = Some(url);
        c.chunking = Chunking::new(Some(Duration::from_secs(30)), 12).unwrap();
        c.concurrency = 2;
        c.attempts = 2;
        c.ladder = "240,360".parse().unwrap();
        c.tools.ffmpeg = ffmpeg;
    })
    .await;
    let source = clip(app.data_dir.path(), "long.mp4", "640x360", "30", 60, true);
    let id = app.upload_ok(&source).await;

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut saw_published = false;
    let doc = loop {
        saw_published |=
            published_files(app.data_dir.path(), &id).iter().any(|f| f.to_string_lossy().ends_with(".m4s"));
        let doc = app.lecture(&id).await;
        if doc["processingStatus"] == "failed" {
            break doc;
        }
        assert_ne!(doc["processingStatus"], "completed", "{doc}");
        assert!(Instant::now() < deadline, "not failed in time: {doc}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(saw_published, "other chunks had published segments before the failure");
    let error = doc["processingError"].as_str().unwrap();
    assert!(
        error.contains("chunk 3 of 5 (24 s to 36 s) failed") && error.contains("chunk decoder exploded"),
        "{error}"
    );
    assert!(doc["videoLink"].is_null(), "{doc}");

    // Nothing published stays, even after a late chunk could have written.
    eventually("published files removed", Duration::from_secs(5), || {
        published_files(app.data_dir.path(), &id).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(published_files(app.data_dir.path(), &id), Vec::<std::path::PathBuf>::new());
    assert_eq!(encoders_of(&id), 0, "no chunk of the failed lecture is encoding");
    let all = all_jobs(&app.api).await;
    assert!(chunk_jobs(&all, &id).is_empty(), "the failed lecture's chunk jobs are removed: {all:?}");
    let job = app.job(&id).await;
    assert_eq!(job["state"], "failed", "{job}");
}

/// A source whose sound outlasts its picture (the container's duration is
/// the sound's): the chunks past the picture's end run, have no frame to
/// encode, and add nothing to the playlists, which end with the picture.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_past_the_end_of_the_picture_add_no_empty_segments() {
    let app = spawn_app_with(|c| {
        c.chunking = Chunking::new(Some(Duration::from_secs(5)), 12).unwrap();
        c.concurrency = 2;
        c.ladder = "240".parse().unwrap();
    })
    .await;
    let source = clip_with_sound(app.data_dir.path(), "short-picture.mp4", "320x240", "30", 8, Some(40));
    let id = app.upload_ok(&source).await;
    let doc = app.wait_for(&id, "completed", Duration::from_secs(120)).await;

    // The chunks after the picture's end (12 s to 40 s) were jobs, and ran.
    let all = all_jobs(&app.api).await;
    let chunks = chunk_jobs(&all, &id);
    assert_eq!(chunks.len(), 4, "chunks of 0-12, 12-24, 24-36, 36-40 s: {chunks:?}");
    assert!(chunks.iter().all(|j| j["state"] == "completed"), "{chunks:?}");

    let master_url = doc["videoLink"].as_str().unwrap().to_string();
    let base = master_url.trim_end_matches("master.m3u8");
    let playlist = text(&app.api, &format!("{base}240p/index.m3u8")).await;
    let durations = vidpipe::transcode::playlist::segment_durations(&playlist);
    assert!(durations.iter().all(|&d| d > 0.0), "a segment of no duration is listed: {playlist}");
    assert!((durations.iter().sum::<f64>() - 8.0).abs() < 0.1, "the picture's 8 s: {playlist}");
    for past in ["c0001_", "c0002_", "c0003_"] {
        assert!(!playlist.contains(past), "nothing of the chunks past the picture: {playlist}");
    }
    let published: Vec<_> = published_files(app.data_dir.path(), &id)
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "m4s") && f.to_string_lossy().contains("/240p/"))
        .collect();
    assert_eq!(published.len(), durations.len(), "no segment file beside the listed ones: {published:?}");
    let probed = ffprobe_rendition(&master_url).await;
    assert!(probed.has_audio, "the master plays with sound");
}

/// Cancel (and delete) of a chunked lecture mid-way stops every chunk's
/// ffmpeg on every worker, and nothing is started again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_or_delete_of_a_chunked_lecture_stops_every_chunk_on_every_worker() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let port = free_port();
    // With a thread budget, which must reach every chunk's ffmpeg.
    let env = chunked_env(port, &[("VIDPIPE_ENCODER_THREADS", "1".to_string())]);
    let _api_process = Process::start("api", data, &env);
    let api = Api::new(format!("http://127.0.0.1:{port}"));
    wait_until_up(&api.client, &api.base).await;
    let _workers = [Process::start("worker", data, &env), Process::start("worker", data, &env)];
    let source = clip(data, "long.mp4", "1280x720", "30", 96, true);

    for how in ["cancel", "delete"] {
        let id = api.upload_ok(&source).await;
        eventually(&format!("two chunks encoding at once ({how})"), Duration::from_secs(90), || encoders_of(&id) >= 2)
            .await;
        assert!(
            encoder_command_lines(&id)
                .iter()
                .all(|c| c.contains("-filter_complex_threads 1 ") && c.contains("-threads 1 ")),
            "{:?}",
            encoder_command_lines(&id)
        );
        let response = match how {
            "cancel" => api.client.post(format!("{}/api/jobs/{id}/cancel", api.base)).send().await.unwrap(),
            _ => api.client.delete(format!("{}/api/lectures/{id}", api.base)).send().await.unwrap(),
        };
        assert!(response.status().is_success(), "{how}: {}", response.status());
        let stopped = Instant::now();
        // The joining job sees it at its next heartbeat and cancels the
        // chunks; their workers see that at theirs.
        eventually(&format!("every chunk's ffmpeg stopped ({how})"), Duration::from_secs(10), || encoders_of(&id) == 0)
            .await;
        eprintln!("{how}: every encoder stopped {:?} after the request", stopped.elapsed());
        // The joining job removes the files once chunks on other workers
        // had time to see the cancel (a heartbeat and a file in flight).
        eventually(&format!("published files removed ({how})"), Duration::from_secs(15), || {
            published_files(data, &id).is_empty()
        })
        .await;
        // Longer than a lease and a poll: a chunk handed back or left
        // waiting would have been claimed again by now, and a late one
        // would have stored a file.
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(encoders_of(&id), 0, "{how}: a chunk started again");
        assert_eq!(published_files(data, &id), Vec::<std::path::PathBuf>::new(), "{how}");
        let all = all_jobs(&api).await;
        assert!(chunk_jobs(&all, &id).is_empty(), "{how}: chunk jobs left: {all:?}");
    }
}

/// Times of the white frames of the first video stream of `input`.
async fn flashes(input: &str) -> Vec<f64> {
    let out = tokio::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i", input, "-map", "0:v:0", "-vf"])
        .arg("signalstats,metadata=print:key=lavfi.signalstats.YAVG:file=-")
        .args(["-f", "null", "-"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut at = 0.0;
    let mut times = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(t) = line.split("pts_time:").nth(1) {
            at = t.trim().parse().unwrap();
        } else if let Some(y) = line.strip_prefix("lavfi.signalstats.YAVG=") {
            if y.trim().parse::<f64>().unwrap() > 128.0 {
                times.push(at);
            }
        }
    }
    times
}

/// Onset times of the clicks in the first audio stream of `input`, to 5 ms.
async fn clicks(input: &str) -> Vec<f64> {
    let out = tokio::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i", input, "-map", "0:a:0", "-af"])
        .arg("asetnsamples=n=240,astats=metadata=1:reset=1,ametadata=print:key=lavfi.astats.Overall.Peak_level:file=-")
        .args(["-f", "null", "-"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut at = 0.0;
    let mut times: Vec<f64> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(t) = line.split("pts_time:").nth(1) {
            at = t.trim().parse().unwrap();
        } else if let Some(level) = line.strip_prefix("lavfi.astats.Overall.Peak_level=") {
            let loud = level.trim().parse::<f64>().is_ok_and(|db| db > -20.0);
            if loud && times.last().is_none_or(|last| at - last > 0.5) {
                times.push(at);
            }
        }
    }
    times
}

/// A flash frame and a click at the same source time, on both sides of
/// chunk boundaries and mid-chunk: after the chunked encode each pair is
/// as far apart as in the source, and every flash moved by the same amount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sound_and_picture_stay_in_sync_across_chunk_boundaries() {
    let app = spawn_app_with(|c| {
        c.chunking = Chunking::new(Some(Duration::from_secs(30)), 12).unwrap();
        c.concurrency = 2;
        c.ladder = "240".parse().unwrap();
    })
    .await;
    // Frames 180 (6 s, mid-chunk), 359 (the last of chunk 0), 720 (the first
    // of chunk 2), 900, 1079 (the last of chunk 2), 1440 (the first of chunk 4).
    let frames = [180, 359, 720, 900, 1079, 1440];
    let flash: Vec<String> = frames.iter().map(|n| format!("eq(n\\,{n})")).collect();
    let click: Vec<String> =
        frames.iter().map(|n| format!("between(t\\,{:.4}\\,{:.4})", *n as f64 / FPS, *n as f64 / FPS + 0.02)).collect();
    let source = app.data_dir.path().join("av.mp4");
    let status = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!(
            "color=black:s=320x240:r=30:d=60,drawbox=x=0:y=0:w=320:h=240:color=white:t=fill:enable='{}'",
            flash.join("+")
        ))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=f=1000:sample_rate=48000:d=60,volume=0:enable='not({})'", click.join("+")))
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k"])
        .arg(&source)
        .status()
        .unwrap();
    assert!(status.success());
    let source_path = source.to_str().unwrap();
    let (source_flashes, source_clicks) = (flashes(source_path).await, clicks(source_path).await);
    assert_eq!(source_flashes.len(), frames.len(), "{source_flashes:?}");
    assert_eq!(source_clicks.len(), frames.len(), "{source_clicks:?}");

    let id = app.upload_ok(&source).await;
    let doc = app.wait_for(&id, "completed", Duration::from_secs(120)).await;
    let master = doc["videoLink"].as_str().unwrap();
    assert!(text(&app.api, master).await.contains("TYPE=AUDIO"), "a chunked encode");
    let (out_flashes, out_clicks) = (flashes(master).await, clicks(master).await);
    assert_eq!(out_flashes.len(), frames.len(), "every flash survives once: {out_flashes:?}");
    assert_eq!(out_clicks.len(), frames.len(), "every click survives once: {out_clicks:?}");
    let shift = out_flashes[0] - source_flashes[0];
    for i in 0..frames.len() {
        let moved = out_flashes[i] - source_flashes[i];
        assert!((moved - shift).abs() < 0.001, "flash {i} moved {moved:.4} s, the first {shift:.4} s: {out_flashes:?}");
        let before = source_clicks[i] - source_flashes[i];
        let after = out_clicks[i] - out_flashes[i];
        assert!(
            (after - before).abs() <= 0.011,
            "frame {}: sound {:.1} ms from the picture, {:.1} ms in the source",
            frames[i],
            after * 1000.0,
            before * 1000.0
        );
    }
}

/// A chunk length that would end mid-segment stops the start-up with a
/// message that says what to write instead.
#[test]
fn a_chunk_length_off_the_segment_grid_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = cli(dir.path(), &["worker", "--chunk-after", "10m", "--chunk-seconds", "20"]);
    assert!(!ok);
    assert!(stderr.contains("--chunk-seconds") && stderr.contains("multiple of the 6s segment length"), "{stderr}");
    let (ok, _, stderr) = cli(dir.path(), &["worker", "--chunk-after", "soon"]);
    assert!(!ok);
    assert!(stderr.contains("or off"), "{stderr}");
}

/// The thumbnail and the storyboard of a chunked lecture come from its
/// chunks: every tile at its place (the picture brightens with time, so a
/// tile out of place breaks the climb), the thumbnail at the time asked
/// for, taken by the chunk that holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_lecture_gets_its_thumbnail_and_storyboard_from_its_chunks() {
    use crate::previews::{image_size, mean_luma, storyboard_cues, upload};
    // On Redis: each backend runs a chunked lecture to completion somewhere.
    let Some(redis) = RedisServer::start() else { return };
    let url = redis.url();
    let app = spawn_app_with(|c| {
        c.queue_url = Some(url);
        c.chunking = Chunking::new(Some(Duration::from_secs(20)), 12).unwrap();
        c.concurrency = 2;
        c.ladder = "180".parse().unwrap();
    })
    .await;
    let source = app.data_dir.path().join("brightening.mp4");
    let status = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "color=c=black:s=320x180:r=30:d=60"])
        .args(["-vf", "geq=lum='16+3*T':cb=128:cr=128,format=yuv420p", "-c:v", "libx264", "-preset", "ultrafast"])
        .arg(&source)
        .status()
        .unwrap();
    assert!(status.success());
    let id = upload(&app, &source, Some("25")).await;
    let doc = app.wait_for(&id, "completed", Duration::from_secs(120)).await;
    let rendition = doc["videoLink"].as_str().unwrap().replace("master.m3u8", "180p/index.m3u8");
    assert!(text(&app.api, &rendition).await.contains("c0004_"), "five chunks: {doc}");

    let vtt_url = doc["storyboardLink"].as_str().expect("a storyboard").to_string();
    let cues = storyboard_cues(&text(&app.api, &vtt_url).await);
    assert_eq!(cues.len(), 30, "a tile every 2 s");
    let sprite = vtt_url.replace("storyboard.vtt", "storyboard.jpg");
    let (width, height) = image_size(&sprite);
    let lumas: Vec<f64> = cues
        .iter()
        .map(|c| {
            assert!(c.2 + c.4 <= width && c.3 + c.5 <= height, "tile inside the sprite");
            mean_luma(&sprite, Some((c.2, c.3, c.4, c.5)))
        })
        .collect();
    let steps: Vec<f64> = lumas.windows(2).map(|w| w[1] - w[0]).collect();
    let mut sorted = steps.clone();
    sorted.sort_by(f64::total_cmp);
    let typical = sorted[sorted.len() / 2];
    assert!(typical > 4.0, "the picture brightens between tiles: {lumas:?}");
    for (i, step) in steps.iter().enumerate() {
        assert!((step - typical).abs() < typical / 2.0, "tile {} is out of place: {lumas:?}", i + 1);
    }

    assert_eq!(doc["thumbnailTime"], 25.0, "{doc}");
    let thumbnail = mean_luma(doc["thumbnailLink"].as_str().expect("a thumbnail"), None);
    assert!(lumas[12] < thumbnail && thumbnail < lumas[13], "25 s lies between the 24 s and 26 s tiles: {thumbnail}");
    let scratch = app.data_dir.path().join("media").join(&id).join("chunked").join("previews");
    assert!(!scratch.exists(), "the chunks' previews are removed once joined");

    // A time whose pair frame (0.5 s later) is in the next chunk: the first
    // chunk takes it all the same.
    let id = upload(&app, &source, Some("11.9")).await;
    let doc = app.wait_for(&id, "completed", Duration::from_secs(120)).await;
    assert_eq!(doc["thumbnailTime"], 11.9, "{doc}");
    let thumbnail = mean_luma(doc["thumbnailLink"].as_str().expect("a thumbnail"), None);
    assert!(lumas[5] < thumbnail && thumbnail < lumas[6], "11.9 s lies between the 10 s and 12 s tiles: {thumbnail}");
}
