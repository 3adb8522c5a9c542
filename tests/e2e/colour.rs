//! Every camera: HDR sources (PQ, HLG) come out tone-mapped SDR BT.709, and
//! 10-bit and 4:2:2 sources come out 8-bit 4:2:0 H.264 High.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

/// The first video stream as ffprobe reports it.
fn video_stream(input: &str) -> Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_streams", "-of", "json", input])
        .output()
        .unwrap();
    assert!(out.status.success(), "ffprobe {input}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["streams"][0].clone()
}

/// SSIM (all planes) of `input` against `reference` scaled to `width`x`height`.
fn ssim(input: &str, reference: &Path, width: u64, height: u64) -> f64 {
    let out = Command::new("ffmpeg")
        .args(["-v", "info", "-i", input, "-i"])
        .arg(reference)
        .args(["-lavfi", &format!("[1:v]scale={width}:{height}:flags=bicubic[r];[0:v][r]ssim"), "-f", "null", "-"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let all = log.rsplit("All:").next().and_then(|s| s.split_whitespace().next()).and_then(|s| s.parse().ok());
    all.unwrap_or_else(|| panic!("no SSIM for {input}: {log}"))
}

/// Real HDR made from SDR footage by converting its pixel values (to linear
/// light, BT.2020 primaries, then the HDR transfer), as 10-bit HEVC: not
/// SDR pixels re-tagged.
fn to_hdr(sdr: &Path, transfer: &str, out: PathBuf) -> PathBuf {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(sdr)
        .arg("-vf")
        .arg(format!(
            "setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv,zscale=t=linear:npl=100,\
             format=gbrpf32le,zscale=p=bt2020:t={transfer}:m=bt2020nc:r=tv:npl=100,format=yuv420p10le"
        ))
        .args(["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error:crf=4"])
        .args(["-color_primaries", "bt2020", "-color_trc", transfer, "-colorspace", "bt2020nc"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "could not make the {transfer} source");
    out
}

/// What the ladder did before tone mapping: scale and squeeze to 8 bits.
fn untone_mapped(hdr: &Path, width: u64, height: u64, out: PathBuf) -> PathBuf {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(hdr)
        .args(["-vf", &format!("scale={width}:{height}:flags=bicubic,format=yuv420p")])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-crf", "16"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    out
}

/// Every rendition's URL, from the completed lecture's master playlist.
async fn renditions(app: &TestApp, id: &str) -> Vec<String> {
    let doc = app.wait_for(id, "completed", Duration::from_secs(120)).await;
    let master_url = doc["videoLink"].as_str().unwrap().to_string();
    let master = app.client.get(&master_url).send().await.unwrap().text().await.unwrap();
    let base = &master_url[..master_url.rfind('/').unwrap() + 1];
    variants(&master).into_iter().map(|(_, uri)| format!("{base}{uri}")).collect()
}

fn assert_sdr_bt709_8bit_high(stream: &Value, what: &str) {
    for (field, value) in [
        ("color_transfer", "bt709"),
        ("color_primaries", "bt709"),
        ("color_space", "bt709"),
        ("pix_fmt", "yuv420p"),
        ("profile", "High"),
    ] {
        assert_eq!(stream[field], value, "{what}: {field} ({stream})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hdr_sources_are_tone_mapped_to_sdr_bt709() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let sdr = clip(dir.path(), "sdr.mp4", "1280x720", "30", 4, false);
    for transfer in ["smpte2084", "arib-std-b67"] {
        let hdr = to_hdr(&sdr, transfer, dir.path().join(format!("{transfer}.mp4")));
        let source = video_stream(hdr.to_str().unwrap());
        assert_eq!(
            (source["color_transfer"].as_str(), source["pix_fmt"].as_str()),
            (Some(transfer), Some("yuv420p10le"))
        );

        let id = app.upload_ok(&hdr).await;
        let urls = renditions(&app, &id).await;
        assert_eq!(urls.len(), 3, "{urls:?}");
        for url in &urls {
            assert_sdr_bt709_8bit_high(&video_stream(url), &format!("{transfer} {url}"));
        }
        let top = urls.iter().find(|u| u.contains("720p")).unwrap();
        let ours = ssim(top, &sdr, 1280, 720);
        let before = untone_mapped(&hdr, 1280, 720, dir.path().join(format!("{transfer}-plain.mp4")));
        let plain = ssim(before.to_str().unwrap(), &sdr, 1280, 720);
        eprintln!("{transfer}: SSIM against the SDR original {ours:.4} tone-mapped, {plain:.4} without");
        assert!(ours >= 0.90, "{transfer}: tone-mapped SSIM {ours:.4}");
        assert!(ours - plain >= 0.04, "{transfer}: tone mapping gains only {:.4} over {plain:.4}", ours - plain);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_bit_and_4_2_2_sources_come_out_8_bit_4_2_0_high() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    for (pix_fmt, profile) in [("yuv420p10le", "High 10"), ("yuv422p", "High 4:2:2")] {
        let source = dir.path().join(format!("{pix_fmt}.mp4"));
        let status = Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30:duration=2"])
            .args(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", pix_fmt])
            .arg(&source)
            .status()
            .unwrap();
        assert!(status.success());
        let probed = video_stream(source.to_str().unwrap());
        assert_eq!((probed["pix_fmt"].as_str(), probed["profile"].as_str()), (Some(pix_fmt), Some(profile)));
        let id = app.upload_ok(&source).await;
        for url in renditions(&app, &id).await {
            assert_sdr_bt709_8bit_high(&video_stream(&url), &format!("{pix_fmt} {url}"));
        }
    }
}
