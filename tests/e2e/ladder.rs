//! Upload → completed → the published ladder is right, checked with ffprobe
//! over HTTP for each kind of source.

use std::time::Duration;

use crate::helpers::*;

struct Expect<'a> {
    renditions: &'a [(&'a str, u32, u32)],
    source: (u32, u32),
    seconds: f64,
    audio: bool,
    frame_rate: &'a str,
}

async fn upload_and_check(app: &TestApp, clip: &std::path::Path, expect: Expect<'_>) -> serde_json::Value {
    let id = app.upload_ok(clip).await;
    let doc = app.wait_for(&id, "completed", Duration::from_secs(180)).await;
    assert_eq!(doc["progress"], 100);
    assert_eq!(doc["attempts"], 1);
    let listed: Vec<(String, u64, u64)> = doc["renditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap().to_string(), r["width"].as_u64().unwrap(), r["height"].as_u64().unwrap()))
        .collect();
    let wanted: Vec<(String, u64, u64)> =
        expect.renditions.iter().map(|(n, w, h)| (n.to_string(), *w as u64, *h as u64)).collect();
    assert_eq!(listed, wanted, "{doc}");
    assert!((doc["durationSeconds"].as_f64().unwrap() - expect.seconds).abs() < 0.2, "{doc}");

    let master_url = doc["videoLink"].as_str().expect("videoLink").to_string();
    assert!(master_url.starts_with(&app.base) && master_url.ends_with("/master.m3u8"), "{master_url}");
    let response = app.client.get(&master_url).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "application/vnd.apple.mpegurl");
    let master = response.text().await.unwrap();
    let variants = variants(&master);
    assert_eq!(variants.len(), expect.renditions.len(), "every variant listed:\n{master}");

    let base = master_url.trim_end_matches("master.m3u8");
    let mut keyframe_sets = Vec::new();
    for ((attrs, uri), (name, w, h)) in variants.iter().zip(expect.renditions) {
        assert!(attrs.contains("BANDWIDTH=") && !attrs.contains("BANDWIDTH=0,"), "{attrs}");
        assert!(attrs.contains(&format!("RESOLUTION={w}x{h}")), "{attrs}");
        assert!(attrs.contains(&format!("FRAME-RATE={}", expect.frame_rate)), "{attrs}");
        assert!(attrs.contains("CODECS=\"avc1."), "{attrs}");
        assert_eq!(attrs.contains("mp4a.40.2"), expect.audio, "{attrs}");
        assert_eq!(uri, &format!("{name}/index.m3u8"));

        let probed = ffprobe_rendition(&format!("{base}{uri}")).await;
        assert_eq!((probed.width, probed.height), (*w, *h), "{name}");
        assert_eq!(probed.width % 2 + probed.height % 2, 0, "even size");
        let source_aspect = expect.source.0 as f64 / expect.source.1 as f64;
        let aspect = probed.width as f64 / probed.height as f64;
        assert!((aspect / source_aspect - 1.0).abs() < 0.02, "{name}: aspect {aspect} vs source {source_aspect}");
        assert!(
            (probed.duration - expect.seconds).abs() < 0.6,
            "{name}: duration {} vs {}",
            probed.duration,
            expect.seconds
        );
        assert_eq!(probed.has_audio, expect.audio, "{name}: audio");
        if expect.audio {
            assert_eq!(probed.audio.as_deref(), Some("aac"), "{name}: every rendition carries AAC");
        }
        assert!(
            probed.keyframes.len() >= (expect.seconds / 2.0).floor() as usize,
            "{name}: keyframes {:?}",
            probed.keyframes
        );
        keyframe_sets.push(probed.keyframes.iter().map(|t| (t * 100.0).round() as i64).collect::<Vec<_>>());
    }
    for set in &keyframe_sets[1..] {
        assert_eq!(set, &keyframe_sets[0], "keyframes align across renditions");
    }
    // Every 2 s.
    let first = &keyframe_sets[0];
    for pair in first.windows(2) {
        assert!((pair[1] - pair[0] - 200).abs() <= 10, "keyframe interval: {first:?}");
    }

    let thumb = app.client.get(doc["thumbnailLink"].as_str().expect("thumbnailLink")).send().await.unwrap();
    assert_eq!(thumb.status(), 200);
    assert_eq!(thumb.headers()["content-type"], "image/jpeg");
    assert!(thumb.bytes().await.unwrap().starts_with(&[0xFF, 0xD8]), "a JPEG");

    // Nothing left behind: the source and the attempt's work files are gone.
    assert!(files_under(&app.uploads_dir()).is_empty(), "{:?}", files_under(&app.uploads_dir()));
    assert!(files_under(&app.data_dir.path().join("work")).is_empty());
    doc
}

#[tokio::test]
async fn landscape_16_9_with_audio_gets_three_rungs() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let clip = clip(dir.path(), "wide.mp4", "1280x720", "30", 7, true);
    let expect = Expect {
        renditions: &[("240p", 426, 240), ("360p", 640, 360), ("720p", 1280, 720)],
        source: (1280, 720),
        seconds: 7.0,
        audio: true,
        frame_rate: "30.000",
    };
    upload_and_check(&app, &clip, expect).await;
}

#[tokio::test]
async fn four_by_three_without_audio_gets_a_video_only_ladder_and_no_upscale() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let clip = clip(dir.path(), "tv.mkv", "640x480", "25", 5, false);
    let expect = Expect {
        renditions: &[("240p", 320, 240), ("360p", 480, 360)],
        source: (640, 480),
        seconds: 5.0,
        audio: false,
        frame_rate: "25.000",
    };
    upload_and_check(&app, &clip, expect).await;
}

#[tokio::test]
async fn portrait_is_capped_on_its_long_side() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let clip = clip(dir.path(), "phone.mp4", "360x640", "30", 5, true);
    let expect = Expect {
        renditions: &[("240p", 240, 426), ("360p", 360, 640)],
        source: (360, 640),
        seconds: 5.0,
        audio: true,
        frame_rate: "30.000",
    };
    upload_and_check(&app, &clip, expect).await;
}

#[tokio::test]
async fn odd_sized_source_gets_even_sizes() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    // libx264 needs even sizes, so store the odd source losslessly in MKV.
    let clip = {
        let out = dir.path().join("odd.mkv");
        let status = std::process::Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=853x479:rate=30:duration=5",
                "-c:v",
                "ffv1",
            ])
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success());
        out
    };
    let expect = Expect {
        renditions: &[("240p", 426, 240), ("360p", 640, 360)],
        source: (853, 479),
        seconds: 5.0,
        audio: false,
        frame_rate: "30.000",
    };
    upload_and_check(&app, &clip, expect).await;
}

#[tokio::test]
async fn source_smaller_than_240p_gets_one_rendition_at_its_own_size() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let clip = clip(dir.path(), "tiny.mp4", "320x180", "30", 5, true);
    let expect = Expect {
        renditions: &[("180p", 320, 180)],
        source: (320, 180),
        seconds: 5.0,
        audio: true,
        frame_rate: "30.000",
    };
    upload_and_check(&app, &clip, expect).await;
}

#[tokio::test]
async fn ntsc_29_97_source_keeps_its_rate_and_aligned_keyframes() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let clip = clip(dir.path(), "ntsc.mp4", "640x360", "30000/1001", 7, true);
    let expect = Expect {
        renditions: &[("240p", 426, 240), ("360p", 640, 360)],
        source: (640, 360),
        seconds: 7.007,
        audio: true,
        frame_rate: "29.970",
    };
    upload_and_check(&app, &clip, expect).await;
}

/// `ffmpeg -i src <args> out`: the same clip in another container or codec.
fn convert(src: &std::path::Path, args: &[&str], out: std::path::PathBuf) -> std::path::PathBuf {
    let status = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(src)
        .args(args)
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "could not make {}", out.display());
    out
}

#[tokio::test]
async fn aac_from_mpeg_ts_is_copied_and_opus_from_matroska_is_encoded() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let mp4 = clip(dir.path(), "sound.mp4", "640x360", "30", 5, true);
    // ADTS framing, which fMP4 cannot hold as is: copied through aac_adtstoasc.
    let ts = convert(&mp4, &["-c", "copy", "-f", "mpegts"], dir.path().join("sound.ts"));
    // Opus is not what HLS players expect: encoded to AAC-LC.
    let mkv = convert(&mp4, &["-c:v", "copy", "-c:a", "libopus", "-b:a", "64k"], dir.path().join("sound.mkv"));
    let probed = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "a:0", "-show_entries", "stream=bit_rate", "-of", "csv=p=0"])
        .arg(&ts)
        .output()
        .unwrap();
    // MPEG-TS lists the stream under its program too: the first line is enough.
    let probed = String::from_utf8_lossy(&probed.stdout);
    let ts_audio_bps: u64 =
        probed.lines().next().unwrap_or_default().trim().parse().expect("the TS source's audio bitrate");
    let mut bandwidths = Vec::new();
    let mut hashes = Vec::new();
    for source in [&ts, &mkv] {
        let expect = Expect {
            renditions: &[("240p", 426, 240), ("360p", 640, 360)],
            source: (640, 360),
            seconds: 5.0,
            audio: true,
            frame_rate: "30.000",
        };
        let doc = upload_and_check(&app, source, expect).await;
        // BANDWIDTH as players read it: from the published master playlist.
        let link = doc["videoLink"].as_str().unwrap();
        let master = reqwest::get(link).await.unwrap().text().await.unwrap();
        let (attrs, uri) = variants(&master).into_iter().find(|(a, _)| a.contains("RESOLUTION=426x240")).unwrap();
        let bandwidth: u64 = attrs.split(',').find_map(|a| a.strip_prefix("BANDWIDTH=")).unwrap().parse().unwrap();
        bandwidths.push(bandwidth);
        hashes.push(audio_hash(&format!("{}{uri}", link.trim_end_matches("master.m3u8")), false).await);
    }
    // BANDWIDTH is (peak video + audio) x 1.1: the source's own audio rate
    // when copied, 96 kbit/s when encoded for 240p.
    let bandwidth = |audio_bps: u64| ((800_000 + audio_bps) as f64 * 1.1) as u64;
    assert_eq!(bandwidths[0], bandwidth(ts_audio_bps), "the TS source's AAC counted at its own rate");
    assert_eq!(bandwidths[1], bandwidth(96_000), "Opus was encoded at 96 kbit/s");
    // Copied means the very same AAC packets (the TS's ADTS headers aside).
    assert_eq!(hashes[0], audio_hash(&ts.display().to_string(), true).await, "the TS source's AAC was copied");
    assert_ne!(hashes[1], audio_hash(&mkv.display().to_string(), false).await, "Opus was re-encoded");
}

/// A hash of the first audio stream's packets (their bytes, not their
/// timestamps); `adts`: strip ADTS headers first, as the copy into fMP4 does.
async fn audio_hash(input: &str, adts: bool) -> String {
    let mut cmd = tokio::process::Command::new("ffmpeg");
    cmd.args(["-v", "error", "-i", input, "-map", "0:a:0", "-c", "copy"]);
    if adts {
        cmd.args(["-bsf:a", "aac_adtstoasc"]);
    }
    let out = cmd.args(["-f", "hash", "-hash", "md5", "-"]).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
