//! What is in an uploaded file, and whether we accept it.
//!
//! Uploads are untrusted. ffmpeg's HLS and concat demuxers follow references
//! inside a file, so a "video" can make the server read local files or fetch
//! URLs. ffprobe therefore runs with `-format_whitelist` (only real video
//! containers are ever opened), `-protocol_whitelist file`, and the transcoder
//! later forces the demuxer found here with `-f`, so the file is never probed
//! again with a wider set of formats.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::media::{
    decoder_limits, AudioStream, Colour, FrameRate, MediaInfo, SubtitleStream, MAX_DIMENSION, MAX_STREAMS,
    TEXT_SUBTITLE_CODECS,
};
use crate::tools::tool_command;

/// Demuxers we open. Each entry is the name ffprobe reports first in
/// `format_name`, which is also the name `-f` takes.
pub const ALLOWED_DEMUXERS: &[&str] = &["mov", "matroska", "avi", "mpegts", "flv", "mpeg", "ogg", "asf"];

/// The same list with every alias ffmpeg uses for those demuxers, as
/// `-format_whitelist` wants it.
pub const FORMAT_WHITELIST: &str = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,flv,mpeg,ogg,asf";

/// Smallest picture we accept on either side: nothing smaller is a lecture,
/// and encoders refuse some of it.
pub const MIN_DIMENSION: u32 = 16;
pub const MAX_DURATION_SECONDS: f64 = 12.0 * 3600.0;
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// Video codecs a lecture upload can plausibly need (ffprobe's
/// `codec_name`): cameras, phones, screen recorders, editors, old formats.
/// Every decoder outside the list is attack surface and nothing else.
pub const VIDEO_CODECS: &[&str] = &[
    "h264",
    "hevc",
    "vp8",
    "vp9",
    "av1",
    "mpeg4",
    "mpeg2video",
    "mpeg1video",
    "mjpeg",
    "prores",
    "dnxhd",
    "wmv1",
    "wmv2",
    "wmv3",
    "vc1",
    "h263",
    "theora",
    "flv1",
    "msmpeg4v2",
    "msmpeg4v3",
    "dvvideo",
    "vp6f",
    "svq3",
    "cinepak",
    // Lossless and intermediate codecs of screen recorders and editors.
    "ffv1",
    "utvideo",
    "huffyuv",
    "ffvhuff",
    "rawvideo",
    "qtrle",
    "png",
];
/// Audio codecs likewise; PCM and ADPCM variants are accepted by prefix.
pub const AUDIO_CODECS: &[&str] =
    &["aac", "mp3", "opus", "vorbis", "ac3", "eac3", "flac", "alac", "mp2", "wmav2", "wmapro", "amr_nb", "amr_wb"];

fn audio_codec_allowed(codec: &str) -> bool {
    AUDIO_CODECS.contains(&codec) || codec.starts_with("pcm_") || codec.starts_with("adpcm_")
}

/// Why a file was refused. Each message is shown to the uploader as is.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("file is empty")]
    Empty,
    #[error("unsupported container: {0} (accepted: MP4/MOV, MKV/WebM, AVI, MPEG-TS, FLV, MPEG-PS, Ogg, ASF/WMV)")]
    UnsupportedContainer(String),
    #[error("no video stream")]
    NoVideo,
    #[error("not a decodable video: {0}")]
    Undecodable(String),
    #[error("video is {width}x{height}; the largest accepted is {MAX_DIMENSION}x{MAX_DIMENSION}")]
    TooLarge { width: u32, height: u32 },
    #[error("video is {width}x{height}; the smallest accepted is {MIN_DIMENSION}x{MIN_DIMENSION}")]
    TooSmall { width: u32, height: u32 },
    #[error("the file has {0} streams; at most {MAX_STREAMS} are accepted")]
    TooManyStreams(String),
    #[error("{kind} codec `{codec}` is not accepted (accepted: {accepted})")]
    UnsupportedCodec { kind: &'static str, codec: String, accepted: String },
    #[error("video is {0:.0} s long; the longest accepted is 12 hours")]
    TooLong(f64),
    #[error("could not run ffprobe: {0}")]
    Tool(#[from] std::io::Error),
}

impl ProbeError {
    /// True when the file itself is at fault (a 4xx, and retrying cannot
    /// help); false when our side failed.
    pub fn is_input_error(&self) -> bool {
        !matches!(self, ProbeError::Tool(_))
    }

    /// True for "this is not a video container we take" (HTTP 415), as
    /// opposed to "a container we take, but unusable" (422).
    pub fn is_unsupported_media_type(&self) -> bool {
        matches!(self, ProbeError::UnsupportedContainer(_))
    }
}

/// Probes `path` and checks it against every rule we have for sources.
pub async fn probe(ffprobe: &Path, path: &Path) -> Result<MediaInfo, ProbeError> {
    if tokio::fs::metadata(path).await?.len() == 0 {
        return Err(ProbeError::Empty);
    }
    let output = run(tool_command(ffprobe)
        .args(["-v", "error", "-protocol_whitelist", "file", "-format_whitelist", FORMAT_WHITELIST])
        .args(decoder_limits())
        .args(["-print_format", "json", "-show_format", "-show_streams"])
        .arg(path))
    .await?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(refusal_reason(&stderr, path).await);
    }
    let report: ProbeReport = serde_json::from_slice(&output.stdout)
        .map_err(|e| ProbeError::Undecodable(format!("ffprobe gave unreadable output: {e}")))?;
    let info = MediaInfo::from_report(report)?;
    decode_first_frame(ffprobe, path, &info).await?;
    Ok(info)
}

async fn run(cmd: &mut Command) -> Result<std::process::Output, ProbeError> {
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true).spawn()?;
    match tokio::time::timeout(PROBE_TIMEOUT, child.wait_with_output()).await {
        Ok(output) => Ok(output?),
        Err(_) => Err(ProbeError::Undecodable(format!("ffprobe did not finish within {PROBE_TIMEOUT:?}"))),
    }
}

/// Headers can lie; decoding one frame proves the video stream is usable.
async fn decode_first_frame(ffprobe: &Path, path: &Path, info: &MediaInfo) -> Result<(), ProbeError> {
    let output = run(tool_command(ffprobe)
        .args(["-v", "error", "-protocol_whitelist", "file", "-f", &info.demuxer])
        .args(decoder_limits())
        .args(["-select_streams", &info.video_stream.to_string(), "-read_intervals", "%+#1"])
        .args(["-show_entries", "frame=pict_type", "-of", "csv=p=0"])
        .arg(path))
    .await?;
    let decoded = String::from_utf8_lossy(&output.stdout);
    if output.status.success() && decoded.lines().any(|l| !l.trim().is_empty()) {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(ProbeError::Undecodable(first_line(&stderr).unwrap_or("no frame could be decoded").to_string()))
    }
}

/// Turns ffprobe's refusal into a reason a person can act on.
async fn refusal_reason(stderr: &str, path: &Path) -> ProbeError {
    // "[hls @ 0x55...] Format not on whitelist '...'": the format was
    // recognised and refused before anything it references was opened.
    if let Some(line) = stderr.lines().find(|l| l.contains("Format not on whitelist")) {
        let name = line.trim_start_matches('[').split(" @").next().unwrap_or("unknown").trim();
        return ProbeError::UnsupportedContainer(name.to_string());
    }
    if stderr.contains("exceeds max_streams") {
        return ProbeError::TooManyStreams(format!("more than {}", MAX_STREAMS * 2));
    }
    if let Some(kind) = sniff_text(path).await {
        return ProbeError::UnsupportedContainer(kind);
    }
    let reason = first_line(stderr).unwrap_or("ffprobe could not read it");
    // ffprobe prefixes its reason with the file name, which means nothing to
    // the uploader and leaks our paths.
    let reason = reason.rsplit(": ").next().unwrap_or(reason);
    ProbeError::Undecodable(reason.to_string())
}

/// The first line ffmpeg wrote, without its `[demuxer @ 0x55d…]` prefix
/// (a heap address, and noise to the uploader).
fn first_line(s: &str) -> Option<&str> {
    let line = s.lines().map(str::trim).find(|l| !l.is_empty())?;
    let unprefixed = match line.strip_prefix('[').and_then(|rest| rest.split_once("] ")) {
        Some((context, message)) if context.contains(" @ 0x") => message.trim_start(),
        _ => line,
    };
    Some(unprefixed)
}

/// Recognises text files (playlists, concat lists, documents) by their first
/// bytes, to say "text" rather than "invalid data".
async fn sniff_text(path: &Path) -> Option<String> {
    let mut head = vec![0u8; 4096];
    let mut file = tokio::fs::File::open(path).await.ok()?;
    let n = file.read(&mut head).await.ok()?;
    let head = std::str::from_utf8(&head[..n]).ok()?;
    if head.chars().any(|c| c.is_control() && !c.is_whitespace()) {
        return None;
    }
    let start = head.trim_start();
    Some(if start.starts_with("#EXTM3U") {
        "text (an HLS playlist)".to_string()
    } else if start.starts_with("ffconcat") || start.starts_with("file ") {
        "text (a concat list)".to_string()
    } else {
        "text".to_string()
    })
}

#[derive(Debug, Deserialize)]
struct ProbeReport {
    #[serde(default)]
    streams: Vec<ProbeStream>,
    format: Option<ProbeFormat>,
}

#[derive(Debug, Deserialize)]
struct ProbeFormat {
    format_name: String,
    duration: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ProbeStream {
    index: usize,
    codec_type: Option<String>,
    codec_name: Option<String>,
    profile: Option<String>,
    channels: Option<u32>,
    sample_rate: Option<String>,
    bit_rate: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    coded_width: Option<u32>,
    coded_height: Option<u32>,
    sample_aspect_ratio: Option<String>,
    avg_frame_rate: Option<String>,
    r_frame_rate: Option<String>,
    duration: Option<String>,
    color_transfer: Option<String>,
    color_primaries: Option<String>,
    color_range: Option<String>,
    #[serde(default)]
    disposition: std::collections::HashMap<String, i64>,
    #[serde(default)]
    tags: std::collections::HashMap<String, String>,
    #[serde(default)]
    side_data_list: Vec<serde_json::Value>,
}

impl MediaInfo {
    fn from_report(report: ProbeReport) -> Result<MediaInfo, ProbeError> {
        let format = report.format.ok_or_else(|| ProbeError::Undecodable("no container format found".into()))?;
        let demuxer = format.format_name.split(',').next().unwrap_or_default().to_string();
        if !ALLOWED_DEMUXERS.contains(&demuxer.as_str()) {
            return Err(ProbeError::UnsupportedContainer(format.format_name));
        }
        let video = report
            .streams
            .iter()
            .find(|s| {
                s.codec_type.as_deref() == Some("video") && s.disposition.get("attached_pic").copied().unwrap_or(0) == 0
            })
            .ok_or(ProbeError::NoVideo)?;
        if report.streams.len() > MAX_STREAMS {
            return Err(ProbeError::TooManyStreams(report.streams.len().to_string()));
        }
        let audio = report.streams.iter().find(|s| s.codec_type.as_deref() == Some("audio"));
        let video_codec = video.codec_name.clone().unwrap_or_default();
        if !VIDEO_CODECS.contains(&video_codec.as_str()) {
            return Err(ProbeError::UnsupportedCodec {
                kind: "video",
                codec: video_codec,
                accepted: VIDEO_CODECS.join(", "),
            });
        }
        if let Some(codec) = audio.map(|a| a.codec_name.clone().unwrap_or_default()) {
            if !audio_codec_allowed(&codec) {
                return Err(ProbeError::UnsupportedCodec {
                    kind: "audio",
                    codec,
                    accepted: format!("{}, PCM, ADPCM", AUDIO_CODECS.join(", ")),
                });
            }
        }

        // A decoder refused by `-max_pixels` leaves the size at 0.
        let (coded_w, coded_h) = match (video.width, video.height) {
            (Some(w), Some(h)) if w > 0 && h > 0 => (w, h),
            _ => return Err(ProbeError::Undecodable("the video stream has no picture size".into())),
        };
        let stored_w = coded_w.max(video.coded_width.unwrap_or(0));
        let stored_h = coded_h.max(video.coded_height.unwrap_or(0));
        if stored_w > MAX_DIMENSION || stored_h > MAX_DIMENSION {
            return Err(ProbeError::TooLarge { width: stored_w, height: stored_h });
        }
        // Non-square pixels: the display width is what players show.
        let sar = video.sample_aspect_ratio.as_deref().and_then(|r| parse_ratio(r, ':'));
        let display_w = match sar {
            Some((n, d)) if n > 0 && d > 0 && n != d => ((coded_w as f64 * n as f64 / d as f64).round() as u32).max(2),
            _ => coded_w,
        };
        // Phones store portrait video as landscape plus a rotation; ffmpeg
        // applies it when decoding, so plan with the rotated size.
        let (width, height) =
            if rotation(video).rem_euclid(180) == 90 { (coded_h, display_w) } else { (display_w, coded_h) };
        if width > MAX_DIMENSION || height > MAX_DIMENSION {
            return Err(ProbeError::TooLarge { width, height });
        }
        if width < MIN_DIMENSION || height < MIN_DIMENSION {
            return Err(ProbeError::TooSmall { width, height });
        }

        let frame_rate = [&video.avg_frame_rate, &video.r_frame_rate]
            .into_iter()
            .filter_map(|r| r.as_deref().and_then(|r| parse_ratio(r, '/')))
            .find(|&(n, d)| n > 0 && d > 0 && (n as f64 / d as f64) <= 1000.0)
            .map(|(num, den)| FrameRate { num, den })
            .unwrap_or(FrameRate { num: 30, den: 1 });

        let duration_seconds = [&format.duration, &video.duration]
            .into_iter()
            .filter_map(|d| d.as_deref().and_then(|d| d.parse::<f64>().ok()))
            .find(|d| d.is_finite() && *d > 0.0)
            .ok_or_else(|| ProbeError::Undecodable("duration is unknown or zero".into()))?;
        if duration_seconds > MAX_DURATION_SECONDS {
            return Err(ProbeError::TooLong(duration_seconds));
        }

        Ok(MediaInfo {
            width,
            height,
            frame_rate,
            duration_seconds,
            audio: audio.map(|a| AudioStream {
                index: a.index,
                codec: a.codec_name.clone().unwrap_or_default(),
                profile: a.profile.clone().unwrap_or_default(),
                channels: a.channels.unwrap_or(0),
                sample_rate: a.sample_rate.as_deref().and_then(|r| r.parse().ok()).unwrap_or(0),
                bit_rate: a.bit_rate.as_deref().and_then(|r| r.parse().ok()),
            }),
            demuxer,
            video_codec,
            video_stream: video.index,
            colour: colour(video),
            subtitles: report
                .streams
                .iter()
                .filter(|s| s.codec_type.as_deref() == Some("subtitle"))
                .filter_map(|s| {
                    let codec = s.codec_name.clone()?;
                    TEXT_SUBTITLE_CODECS.contains(&codec.as_str()).then(|| SubtitleStream {
                        index: s.index,
                        codec,
                        language: s.tags.get("language").cloned(),
                    })
                })
                .collect(),
        })
    }
}

#[cfg(test)]
#[test]
fn ffmpeg_log_prefixes_are_dropped() {
    assert_eq!(first_line("\n[mov,mp4,m4a @ 0x5647deee42c0] moov atom not found\n"), Some("moov atom not found"));
    assert_eq!(first_line("Invalid data found"), Some("Invalid data found"));
}

/// The source's colour encoding. Container metadata is all ffprobe has here;
/// a file that lies about it gets a wrong conversion, never a failure.
fn colour(stream: &ProbeStream) -> Colour {
    let dolby_vision_base = stream
        .side_data_list
        .iter()
        .find(|sd| sd.get("side_data_type").and_then(|t| t.as_str()) == Some("DOVI configuration record"))
        .and_then(|sd| sd.get("dv_bl_signal_compatibility_id").and_then(|id| id.as_i64()));
    Colour::of(
        stream.color_transfer.as_deref(),
        stream.color_primaries.as_deref(),
        stream.color_range.as_deref() == Some("pc"),
        dolby_vision_base,
    )
}

fn rotation(stream: &ProbeStream) -> i64 {
    let from_side_data = stream.side_data_list.iter().find_map(|sd| sd.get("rotation").and_then(|r| r.as_i64()));
    from_side_data.or_else(|| stream.tags.get("rotate").and_then(|r| r.parse().ok())).unwrap_or(0)
}

fn parse_ratio(s: &str, sep: char) -> Option<(u32, u32)> {
    let (n, d) = s.split_once(sep)?;
    Some((n.trim().parse().ok()?, d.trim().parse().ok()?))
}
