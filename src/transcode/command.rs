//! The ffmpeg command lines, built from a [`Plan`].
//!
//! One process decodes the source once and encodes every rendition: the
//! decoded picture is `split`, each branch scaled to its rung. Building the
//! arguments is pure so the exact command is covered by tests.

use std::ffi::OsString;
use std::path::Path;

use crate::ingest::probe::MediaInfo;
use crate::transcode::plan::Plan;

/// x264 preset of every rendition: with one decode for the whole ladder it
/// is over twice as fast as the old design's `medium`, and capped CRF
/// (per rendition, see `plan.rs`) buys back the quality (ARCHITECTURE.md,
/// "Encoder settings").
pub const X264_PRESET: &str = "veryfast";
/// Seconds between forced keyframes. Every rendition sees the same
/// timestamps, so their IDR frames, and therefore their segment boundaries,
/// line up and players can switch between them at any segment.
pub const KEYFRAME_INTERVAL: u32 = 2;
/// Target segment length; a multiple of the keyframe interval.
pub const SEGMENT_SECONDS: u32 = 6;
pub const SEGMENT_PATTERN: &str = "seg_%05d.ts";
pub const MEDIA_PLAYLIST: &str = "index.m3u8";
pub const MASTER_PLAYLIST: &str = "master.m3u8";
pub const THUMBNAIL: &str = "thumbnail.jpg";

/// Options before `-i` that make reading an untrusted file safe: no stdin, no
/// protocol but plain files, and the demuxer the probe found, so the file is
/// not probed again and cannot turn out to be a playlist. `seek` (`-ss`
/// before `-i`) seeks in the input instead of decoding up to the point.
fn safe_input(media: &MediaInfo, input: &Path, seek: Option<String>) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["-nostdin", "-hide_banner", "-loglevel", "error", "-protocol_whitelist", "file"]
        .into_iter()
        .map(OsString::from)
        .collect();
    if let Some(at) = seek {
        args.extend(["-ss".into(), at.into()]);
    }
    args.extend(["-f".into(), media.demuxer.clone().into(), "-i".into(), input.as_os_str().to_owned()]);
    args
}

/// The single ffmpeg run that writes every rendition as HLS into `out_dir`:
/// `<name>/index.m3u8` and `<name>/seg_NNNNN.ts`.
///
/// Playlists are written as EVENT playlists while encoding, so the publisher
/// can ship each segment as soon as its playlist lists it.
pub fn ladder_args(media: &MediaInfo, plan: &Plan, input: &Path, out_dir: &Path) -> Vec<OsString> {
    let n = plan.renditions.len();
    let mut args = safe_input(media, input, None);

    // Decode once, then one scaled branch per rendition.
    let mut graph = format!("[0:{}]", media.video_stream);
    if plan.fps != media.frame_rate {
        graph.push_str(&format!("fps={},", plan.fps));
    }
    graph.push_str(&format!("split={n}"));
    for i in 0..n {
        graph.push_str(&format!("[s{i}]"));
    }
    for (i, r) in plan.renditions.iter().enumerate() {
        graph.push_str(&format!(
            ";[s{i}]scale={}:{}:flags=bicubic,setsar=1,format=yuv420p[v{i}]",
            r.width(),
            r.height()
        ));
    }
    args.extend(["-filter_complex".into(), graph.into()]);

    for i in 0..n {
        args.extend(["-map".into(), format!("[v{i}]").into()]);
        // One audio stream cannot feed two variants, so it is mapped once per
        // rendition.
        if let Some(audio) = media.audio_stream.filter(|_| plan.has_audio) {
            args.extend(["-map".into(), format!("0:{audio}").into()]);
        }
    }

    let keyint = (plan.fps.as_f64() * KEYFRAME_INTERVAL as f64 * 2.0).ceil() as u32;
    let common = [
        "-c:v".to_string(),
        "libx264".into(),
        "-preset".into(),
        X264_PRESET.into(),
        "-profile:v".into(),
        "high".into(),
        // No scene-cut keyframes: they would differ between renditions.
        "-sc_threshold".into(),
        "0".into(),
        "-g".into(),
        keyint.to_string(),
        "-force_key_frames".into(),
        format!("expr:gte(t,n_forced*{KEYFRAME_INTERVAL})"),
    ];
    args.extend(common.into_iter().map(OsString::from));
    for (i, r) in plan.renditions.iter().enumerate() {
        args.extend([
            format!("-crf:v:{i}").into(),
            r.crf().to_string().into(),
            format!("-maxrate:v:{i}").into(),
            r.peak_video_bps().to_string().into(),
            format!("-bufsize:v:{i}").into(),
            (r.peak_video_bps() * 2).to_string().into(),
            format!("-level:v:{i}").into(),
            r.level().as_option().into(),
        ]);
        if let Some(bps) = r.audio_bps() {
            args.extend([format!("-b:a:{i}").into(), bps.to_string().into()]);
        }
    }
    if plan.has_audio {
        args.extend(["-c:a", "aac", "-ac", "2", "-ar", "48000"].map(OsString::from));
    }

    let stream_map: Vec<String> = plan
        .renditions
        .iter()
        .enumerate()
        .map(|(i, r)| if plan.has_audio { format!("v:{i},a:{i},name:{}", r.name()) } else { format!("v:{i},name:{}", r.name()) })
        .collect();
    args.extend(
        [
            "-f",
            "hls",
            "-hls_time",
            &SEGMENT_SECONDS.to_string(),
            "-hls_playlist_type",
            "event",
            "-hls_flags",
            "independent_segments+temp_file",
            "-hls_segment_type",
            "mpegts",
        ]
        .map(OsString::from),
    );
    args.extend(["-hls_segment_filename".into(), out_dir.join("%v").join(SEGMENT_PATTERN).into_os_string()]);
    args.extend(["-var_stream_map".into(), stream_map.join(" ").into()]);
    args.extend(["-progress", "pipe:1", "-nostats"].map(OsString::from));
    args.push(out_dir.join("%v").join(MEDIA_PLAYLIST).into_os_string());
    args
}

/// A JPEG of one frame near 10% of the duration (the first frames of a
/// lecture are often black), at the largest rendition's size.
pub fn thumbnail_args(media: &MediaInfo, plan: &Plan, input: &Path, out: &Path) -> Vec<OsString> {
    let at = format!("{:.3}", plan.duration_seconds * 0.1);
    let largest = plan.renditions.last().expect("a plan has at least one rendition");
    let mut args = safe_input(media, input, Some(at));
    args.extend(
        [
            "-map".to_string(),
            format!("0:{}", media.video_stream),
            "-frames:v".into(),
            "1".into(),
            "-vf".into(),
            format!("scale={}:{},setsar=1", largest.width(), largest.height()),
            "-q:v".into(),
            "3".into(),
            "-progress".into(),
            "pipe:1".into(),
            "-y".into(),
        ]
        .map(OsString::from),
    );
    args.push(out.as_os_str().to_owned());
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcode::plan::{FrameRate, Ladder};

    fn media(has_audio: bool) -> MediaInfo {
        MediaInfo {
            width: 1280,
            height: 720,
            frame_rate: FrameRate { num: 30, den: 1 },
            duration_seconds: 10.0,
            has_audio,
            demuxer: "mov".into(),
            video_codec: "h264".into(),
            video_stream: 0,
            audio_stream: has_audio.then_some(1),
        }
    }

    fn joined(args: &[OsString]) -> String {
        args.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn ladder_command_decodes_once_and_forces_the_demuxer() {
        let m = media(true);
        let plan = Plan::new(&m, &Ladder::default());
        let args = joined(&ladder_args(&m, &plan, Path::new("/in/src.mp4"), Path::new("/out")));
        assert!(args.starts_with("-nostdin -hide_banner -loglevel error -protocol_whitelist file -f mov -i /in/src.mp4"), "{args}");
        assert!(args.contains("-filter_complex [0:0]split=3[s0][s1][s2];[s0]scale=426:240:flags=bicubic,setsar=1,format=yuv420p[v0];[s1]scale=640:360"), "{args}");
        assert!(args.contains("-map [v0] -map 0:1 -map [v1] -map 0:1 -map [v2] -map 0:1"), "{args}");
        assert!(args.contains("-force_key_frames expr:gte(t,n_forced*2)"), "{args}");
        assert!(args.contains("-crf:v:2 16 -maxrate:v:2 2764800 -bufsize:v:2 5529600 -level:v:2 3.1 -b:a:2 128000"), "{args}");
        assert!(args.contains("-crf:v:0 11 -maxrate:v:0 797"), "{args}");
        assert!(args.contains("-var_stream_map v:0,a:0,name:240p v:1,a:1,name:360p v:2,a:2,name:720p"), "{args}");
        assert!(args.ends_with("-progress pipe:1 -nostats /out/%v/index.m3u8"), "{args}");
        assert_eq!(args.matches(" -i ").count(), 1, "one input, decoded once");
    }

    #[test]
    fn silent_sources_get_a_video_only_ladder() {
        let m = media(false);
        let plan = Plan::new(&m, &Ladder::default());
        let args = joined(&ladder_args(&m, &plan, Path::new("/in/src.mp4"), Path::new("/out")));
        assert!(!args.contains("-map 0:1") && !args.contains("aac") && !args.contains("a:0"), "{args}");
        assert!(args.contains("-var_stream_map v:0,name:240p v:1,name:360p v:2,name:720p"), "{args}");
    }

    #[test]
    fn thumbnail_seeks_to_a_tenth_of_the_duration() {
        let m = media(true);
        let plan = Plan::new(&m, &Ladder::default());
        let args = joined(&thumbnail_args(&m, &plan, Path::new("/in/src.mp4"), Path::new("/out/t.jpg")));
        assert!(args.contains("-protocol_whitelist file -ss 1.000 -f mov -i /in/src.mp4 -map 0:0 -frames:v 1"), "{args}");
        assert!(args.ends_with("-y /out/t.jpg"), "{args}");
    }
}
