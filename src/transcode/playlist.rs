//! HLS playlists: reading the media playlists ffmpeg writes, turning them
//! into VOD playlists, and writing the master playlist ourselves.
//!
//! We write the master from the plan rather than letting ffmpeg write it,
//! because ffmpeg 5.1 omits FRAME-RATE and drops any variant whose bitrate it
//! cannot determine; the plan knows every variant's peak rate and codecs.

use crate::transcode::command::MEDIA_PLAYLIST;
use crate::transcode::plan::Plan;

/// The segment URIs a media playlist lists, in order.
pub fn segments(playlist: &str) -> Vec<&str> {
    playlist.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect()
}

/// An EVENT playlist as a finished VOD playlist (type VOD, with ENDLIST).
pub fn to_vod(playlist: &str) -> String {
    let mut out = String::with_capacity(playlist.len() + 32);
    let has_type = playlist.contains("#EXT-X-PLAYLIST-TYPE:");
    for line in playlist.lines() {
        if line.starts_with("#EXT-X-PLAYLIST-TYPE:") {
            out.push_str("#EXT-X-PLAYLIST-TYPE:VOD");
        } else {
            out.push_str(line);
        }
        out.push('\n');
        if line.starts_with("#EXT-X-TARGETDURATION") && !has_type {
            out.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n");
        }
    }
    if !playlist.contains("#EXT-X-ENDLIST") {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

/// The master playlist: every rendition with BANDWIDTH, RESOLUTION, CODECS
/// and FRAME-RATE, lowest first.
pub fn master(plan: &Plan) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for r in &plan.renditions {
        out.push_str(&format!(
            "#EXT-X-STREAM-INF:BANDWIDTH={},RESOLUTION={}x{},FRAME-RATE={:.3},CODECS=\"{}\"\n{}/{}\n",
            r.bandwidth(),
            r.width(),
            r.height(),
            plan.fps.as_f64(),
            r.codecs(),
            r.name(),
            MEDIA_PLAYLIST
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::probe::MediaInfo;
    use crate::transcode::plan::{FrameRate, Ladder};

    const EVENT: &str = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:6\n#EXT-X-MEDIA-SEQUENCE:0\n\
        #EXT-X-PLAYLIST-TYPE:EVENT\n#EXTINF:6.000000,\nseg_00000.ts\n#EXTINF:2.000000,\nseg_00001.ts\n";

    #[test]
    fn event_playlists_become_vod_with_an_end() {
        let vod = to_vod(EVENT);
        assert!(vod.contains("#EXT-X-PLAYLIST-TYPE:VOD\n") && !vod.contains("EVENT"));
        assert!(vod.ends_with("seg_00001.ts\n#EXT-X-ENDLIST\n"));
        assert_eq!(to_vod(&vod), vod, "idempotent");
        assert_eq!(segments(EVENT), ["seg_00000.ts", "seg_00001.ts"]);
    }

    #[test]
    fn master_lists_every_variant() {
        let media = MediaInfo {
            width: 1280,
            height: 720,
            frame_rate: FrameRate { num: 30000, den: 1001 },
            duration_seconds: 10.0,
            has_audio: true,
            demuxer: "mov".into(),
            video_codec: "h264".into(),
            video_stream: 0,
            audio_stream: Some(1),
        };
        let text = master(&Plan::new(&media, &Ladder::default()));
        assert_eq!(text.matches("#EXT-X-STREAM-INF").count(), 3);
        assert!(text.contains("RESOLUTION=426x240,FRAME-RATE=29.970,CODECS=\"avc1.64001e,mp4a.40.2\"\n240p/index.m3u8\n"), "{text}");
        assert!(text.contains("RESOLUTION=1280x720,FRAME-RATE=29.970,CODECS=\"avc1.64001f,mp4a.40.2\"\n720p/index.m3u8\n"), "{text}");
    }
}
