//! Storage mode × lecture state × player, each cell checked as a viewer
//! would: every level listed, the clock advances, a lecture opened while
//! processing starts at 0 (not at the "live" edge), switching to the top
//! level plays on, and seeking into a finished lecture plays from there.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vidpipe::config::StorageConfig;

use crate::bucket_front::BucketFront;
use crate::helpers::*;
use crate::server::S3Server;

const FINISHED_SECONDS: u32 = 30;
/// Long enough to stay processing while both players are checked, with
/// the encode held to real time (see [`real_time_ffmpeg`]).
const GROWING_SECONDS: u32 = 75;
/// Segments the growing lecture has before a player opens it: with 6 s
/// segments a player that starts at the live edge (three target durations
/// from the end) starts at 12 s or later, far from 0.
const SEGMENTS_BEFORE_OPENING: usize = 5;
const HEIGHTS: [u64; 3] = [240, 360, 720];
/// Captions of the finished lecture: a cue where players seek to.
const MIDDLE_CUE: &str =
    "WEBVTT\n\n00:00:01.000 --> 00:00:03.000\nAt the start\n\n00:00:14.000 --> 00:00:19.000\nIn the middle\n";

/// One column (or page test) at a time. Each runs an encode held to real
/// time and Chromiums decoding 720p; three at once on a 2-core runner
/// starved them (one CI run encoded at 0.72x real time and Shaka sat 30 s
/// on an empty buffer after a switch), which tests the runner, not vidpipe.
pub static ONE_COLUMN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether Chromium, Node.js and the npm packages are here. In CI a
/// missing one fails the test; elsewhere it skips, loudly.
pub fn browser_ready() -> bool {
    let chromium = std::env::var("VIDPIPE_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules/playwright-core");
    let node = std::process::Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    let missing: Vec<&str> = [
        (!Path::new(&chromium).exists()).then_some("Chromium (apt-get install -y chromium)"),
        (!node).then_some("Node.js"),
        (!modules.exists()).then_some("the npm packages (npm ci --prefix tests/browser)"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if missing.is_empty() {
        return true;
    }
    let help = format!("browser tests need {}; .ci/run installs them", missing.join(", "));
    assert!(std::env::var_os("CI").is_none(), "{help}");
    eprintln!("\n!!!!!!!! SKIPPED: {help} !!!!!!!!\n");
    false
}

/// Plays `master` in `player` (`hls` or `shaka`) through
/// `tests/browser/players.mjs` with its `options` (`seek`, `follow`) and
/// returns its report.
pub async fn play(master: &str, player: &str, mut options: Value) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/players.mjs");
    options["master"] = json!(master);
    options["player"] = json!(player);
    let follow = options["follow"].as_u64().unwrap_or(0);
    let run = tokio::process::Command::new("node").arg(&script).arg(options.to_string()).kill_on_drop(true).output();
    let limit = Duration::from_secs(150 + follow);
    let out = tokio::time::timeout(limit, run).await.expect("the player run ends").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = stdout.lines().rev().find_map(|l| serde_json::from_str::<Value>(l).ok());
    report.unwrap_or_else(|| panic!("no report from {player}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)))
}

/// What every cell must show.
fn assert_plays(report: &Value, cell: &str) {
    eprintln!("{cell}: {report}");
    assert_eq!(report["ok"], true, "{cell}: {} (report: {report})", report["failure"]);
    assert_eq!(report["heights"], json!(HEIGHTS), "{cell}: every level listed");
    let start = report["start"].as_f64().unwrap();
    assert!(start < 1.0, "{cell}: starts at the beginning, not at {start} s");
    assert!(report["advancedTo"].as_f64().unwrap() > 2.0, "{cell}: currentTime advances past 2 s");
    assert_eq!(report["playingHeight"], report["topHeight"], "{cell}: switched to the top level");
    assert_eq!(report["topHeight"], 720, "{cell}");
    let fatal: Vec<&Value> = report["errors"].as_array().unwrap().iter().filter(|e| e["fatal"] == true).collect();
    assert!(fatal.is_empty(), "{cell}: no fatal player error: {fatal:?}");
}

/// An ffmpeg that encodes at the source's own speed (`-readrate 1`) while
/// the file `marker` exists, so a lecture stays processing for as long as
/// it lasts: what a long lecture on a busy worker looks like to a viewer.
fn real_time_ffmpeg(dir: &Path, marker: &Path) -> PathBuf {
    script(
        dir,
        "real-time-ffmpeg",
        &format!(
            "case \"$*\" in *var_stream_map*) [ -e '{}' ] && exec ffmpeg -readrate 1 \"$@\";; esac\nexec ffmpeg \"$@\"",
            marker.display()
        ),
    )
}

/// The whole column of one storage mode.
async fn every_player_plays(mode: &str, storage: StorageConfig) {
    let _alone = ONE_COLUMN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("real-time");
    let ffmpeg = real_time_ffmpeg(dir.path(), &marker);
    let app = spawn_app_with(|c| {
        c.storage = storage;
        c.tools.ffmpeg = ffmpeg;
        // Two minutes of 720p test pattern is over the tests' default limit.
        c.max_upload_bytes = 512 << 20;
    })
    .await;

    // A finished lecture: plays, switches up, seeks to the middle.
    let finished = clip(dir.path(), "finished.mp4", "1280x720", "30", FINISHED_SECONDS, true);
    let id = app.upload_ok(&finished).await;
    let doc = app.wait_for(&id, "completed", Duration::from_secs(180)).await;
    let finished_link = doc["videoLink"].as_str().unwrap().to_string();
    // With captions: one cue around the middle, where the players seek to.
    let form = reqwest::multipart::Form::new()
        .part("captions", reqwest::multipart::Part::bytes(MIDDLE_CUE.as_bytes().to_vec()).file_name("en.vtt"))
        .text("captionsLanguage", "en");
    let stored = app.client.post(format!("{}/api/lectures/{id}/captions", app.base)).multipart(form).send().await;
    assert_eq!(stored.unwrap().status(), 201, "captions stored");

    // The next one is encoded in real time; players check the first while it grows.
    std::fs::write(&marker, b"").unwrap();
    let growing = clip(dir.path(), "growing.mp4", "1280x720", "30", GROWING_SECONDS, true);
    let growing_id = app.upload_ok(&growing).await;

    for player in ["hls", "shaka"] {
        let cell = format!("{mode} × completed × {player}");
        let report = play(&finished_link, player, json!({ "seek": true, "captions": "en" })).await;
        assert_plays(&report, &cell);
        assert_eq!(report["textLanguages"], json!(["en"]), "{cell}: the captions are listed");
        assert_eq!(report["cueText"], "In the middle", "{cell}: the cue shows at its time");
        let shown_at = report["cueShownAt"].as_f64().unwrap();
        assert!((14.0..19.0).contains(&shown_at), "{cell}: the cue showed at {shown_at} s, outside 14-19 s");
        let (middle, reached) = (report["seekedTo"].as_f64().unwrap(), report["playedFromMiddleTo"].as_f64().unwrap());
        assert!((middle - FINISHED_SECONDS as f64 / 2.0).abs() < 1.0, "{cell}: seeked to {middle}");
        assert!(reached > middle + 1.0, "{cell}: plays on from the middle ({reached})");
    }

    // The growing lecture, opened once it has several segments.
    let opened = Instant::now();
    let (link, segments) = loop {
        let doc = app.lecture(&growing_id).await;
        assert!(["pending", "processing"].contains(&doc["processingStatus"].as_str().unwrap()), "{doc}");
        if let Some(link) = doc["videoLink"].as_str() {
            let media = link.replace("master.m3u8", "240p/index.m3u8");
            let text = app.client.get(&media).send().await.unwrap().text().await.unwrap();
            let segments = text.matches("#EXTINF").count();
            if segments >= SEGMENTS_BEFORE_OPENING {
                assert!(text.contains("#EXT-X-PLAYLIST-TYPE:EVENT") && !text.contains("#EXT-X-ENDLIST"), "{text}");
                break (link.to_string(), segments);
            }
        }
        assert!(opened.elapsed() < Duration::from_secs(120), "{SEGMENTS_BEFORE_OPENING} segments never published");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Both players at once, each staying on until the lecture is complete.
    let follow = json!({ "follow": 2 * GROWING_SECONDS, "duration": GROWING_SECONDS });
    let (hls, shaka) = tokio::join!(play(&link, "hls", follow.clone()), play(&link, "shaka", follow));
    let job = app.job(&growing_id).await;
    let finished_at = job["finishedAt"].as_str().unwrap_or_else(|| panic!("the job finished: {job}"));
    let finished_ms = humantime::parse_rfc3339(finished_at).unwrap().duration_since(std::time::UNIX_EPOCH).unwrap();
    for (player, report) in [("hls", hls), ("shaka", shaka)] {
        let cell = format!("{mode} × processing ({segments}+ segments) × {player}");
        assert_plays(&report, &cell);
        // The beginning was not the only place to start: the live edge was far.
        let edge = report["seekable"][1].as_f64().unwrap_or_default();
        assert!(
            edge >= 6.0 * (SEGMENTS_BEFORE_OPENING - 1) as f64,
            "{cell}: the player saw the grown playlist ({edge} s)"
        );
        let checked_ms = report["checkedAtMs"].as_u64().unwrap() as u128;
        assert!(checked_ms < finished_ms.as_millis(), "{cell}: checked while processing (job finished {finished_at})");
        // Then the switch to VOD, under the playing player: it plays on.
        assert!(report["vodAtMs"].as_u64().unwrap() as u128 >= finished_ms.as_millis(), "{cell}: VOD only at the end");
        assert!(report["playedAfterVodTo"].as_f64().is_some(), "{cell}: plays on after the switch");
        // hls.js then knows the whole duration. Shaka 5.2 takes the shortest
        // of every variant it ever loaded (`getMinDuration_` in its HLS
        // parser), stale ones included, so its duration stays short of the
        // end; see the README's "Tested players".
        let duration = report["vodDuration"].as_f64().unwrap();
        if player == "hls" {
            assert!((duration - GROWING_SECONDS as f64).abs() < 1.0, "{cell}: the VOD's whole duration ({duration} s)");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_disk() {
    if !browser_ready() {
        return;
    }
    every_player_plays("local disk", StorageConfig::Local).await;
}

/// S3 through [`BucketFront`], with the CORS rule vidpipe puts on the bucket.
async fn s3_column(mode: &str, signed: bool) {
    if !browser_ready() {
        return;
    }
    let Some(server) = S3Server::start() else { return };
    let front = BucketFront::start(&server, !signed).await;
    let mut s3 = server.config("vod");
    s3.endpoint = Some(front.endpoint());
    s3.signed_url_ttl = signed.then_some(Duration::from_secs(600));
    s3.cors_origins = vec!["*".into()];
    every_player_plays(mode, StorageConfig::S3(Box::new(s3))).await;
    let rule = front.cors_configuration().expect("vidpipe put a CORS rule on the bucket");
    assert!(rule.contains("<AllowedOrigin>*</AllowedOrigin>"), "{rule}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_public_bucket() {
    s3_column("S3 public", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_signed_links() {
    s3_column("S3 signed", true).await;
}
