//! HLS playlists: reading the media playlists ffmpeg writes, turning them
//! into VOD playlists, and writing the master playlist ourselves.
//!
//! We write the master from the plan rather than letting ffmpeg write it,
//! because ffmpeg 5.1 omits FRAME-RATE and drops any variant whose bitrate it
//! cannot determine; the plan knows every variant's peak rate and codecs.

use crate::captions::CaptionSummary;
use crate::transcode::command::MEDIA_PLAYLIST;
use crate::transcode::plan::Plan;

const MAP_TAG: &str = "#EXT-X-MAP:";

/// The files a media playlist references, in order: each fMP4
/// initialization section (`EXT-X-MAP`) where it appears, and the segments.
pub fn files(playlist: &str) -> Vec<&str> {
    playlist.lines().filter_map(|line| line_uri(line).map(|(_, uri, _)| uri)).collect()
}

/// The playlist with every referenced file replaced by `to(uri)`, e.g. a
/// presigned URL; every other line is kept as it is.
pub fn replace_files(playlist: &str, mut to: impl FnMut(&str) -> String) -> String {
    let mut out = String::with_capacity(playlist.len() * 4);
    for line in playlist.lines() {
        match line_uri(line) {
            Some((before, uri, after)) => {
                out.push_str(before);
                out.push_str(&to(uri));
                out.push_str(after);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// A tag carrying a `URI` attribute that [`files`] and [`replace_files`]
/// would leave as is: any tag but `EXT-X-MAP` (a key, a partial segment...),
/// or an `EXT-X-MAP` with a second `URI`.
pub fn foreign_uri_tag(playlist: &str) -> Option<&str> {
    playlist.lines().map(str::trim).find(|l| {
        l.starts_with('#') && l.contains("URI=") && (!l.starts_with(MAP_TAG) || l.matches("URI=").count() > 1)
    })
}

/// `(text before, URI, text after)` of a line that references a file: a
/// segment line, or the URI attribute of an `EXT-X-MAP` tag. ffmpeg writes
/// no other tag with a URI; [`foreign_uri_tag`] finds one if it ever does.
fn line_uri(line: &str) -> Option<(&str, &str, &str)> {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return None;
    }
    if !trimmed.starts_with('#') {
        return Some(("", trimmed, ""));
    }
    let attributes = trimmed.strip_prefix(MAP_TAG)?;
    let start = trimmed.len() - attributes.len() + attributes.find("URI=\"")? + 5;
    let len = trimmed[start..].find('"')?;
    Some((&trimmed[..start], &trimmed[start..start + len], &trimmed[start + len..]))
}

/// Where every player starts: the beginning.
///
/// A lecture still processing has an EVENT playlist (no ENDLIST), which
/// hls.js, Shaka Player and Safari treat as live: without this tag they
/// start a few segments from the end, and a student who opens the lecture
/// 30 s after it became playable misses its first 20 s. RFC 8216 §4.3.5.2:
/// clients SHOULD start at `TIME-OFFSET`.
///
/// The offset is one millisecond, not 0, because Shaka Player (5.2,
/// `player.js`) tests the parsed offset for truthiness and ignores 0; hls.js
/// and Safari take any offset, and 1 ms lands in the first segment for
/// all three. `PRECISE=YES` would make a player drop the samples before the
/// offset, so it is left at its default (NO): the first frame is shown.
pub const START_TAG: &str = "#EXT-X-START:TIME-OFFSET=0.001";

/// A media playlist as players get it while it grows (EVENT): with
/// [`START_TAG`] after the header, once.
pub fn for_players(playlist: &str) -> String {
    let mut out = String::with_capacity(playlist.len() + START_TAG.len() + 1);
    let mut placed = playlist.lines().any(|l| l.starts_with("#EXT-X-START:"));
    for line in playlist.lines() {
        out.push_str(line);
        out.push('\n');
        // After the version, or the first line if there is no version tag.
        let header_ends = line.starts_with("#EXT-X-VERSION:")
            || (line.starts_with("#EXTM3U") && !playlist.contains("#EXT-X-VERSION:"));
        if header_ends && !placed {
            out.push_str(START_TAG);
            out.push('\n');
            placed = true;
        }
    }
    out
}

/// An EVENT playlist as a finished VOD playlist (type VOD, with ENDLIST),
/// still with [`START_TAG`], so a player reloading it at the switch keeps
/// the same start rule.
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
    for_players(&out)
}

/// The master playlist: every rendition with BANDWIDTH, RESOLUTION, CODECS
/// and FRAME-RATE, lowest first.
pub fn master(plan: &Plan) -> String {
    // Version 7, like the media playlists: fMP4 segments need 6 or more.
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
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

/// The audio group of a chunked lecture's variants: its sound is one
/// rendition of its own ([`crate::transcode::command::AUDIO_DIR`]), encoded
/// once for the whole source, since encoding it per chunk would put AAC
/// priming (a click) at every chunk boundary.
pub const AUDIO_GROUP: &str = "audio";

/// The master playlist of a chunked lecture: [`master`], with the variants
/// video-only and the sound, if the source has any, as an `EXT-X-MEDIA`
/// audio rendition every variant names (`AUDIO=`). BANDWIDTH and CODECS
/// still count the sound, which plays along with every variant.
pub fn master_with_separate_audio(plan: &Plan) -> String {
    let master = master(plan);
    if plan.audio.is_silent() {
        return master;
    }
    let mut out = String::with_capacity(master.len() + 256);
    let mut placed = false;
    for line in master.lines() {
        if line.starts_with("#EXT-X-STREAM-INF:") {
            if !placed {
                out.push_str(&format!(
                    "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"{AUDIO_GROUP}\",NAME=\"Audio\",DEFAULT=YES,AUTOSELECT=YES,\
                     URI=\"{}/{MEDIA_PLAYLIST}\"\n",
                    crate::transcode::command::AUDIO_DIR
                ));
                placed = true;
            }
            out.push_str(&format!("{line},AUDIO=\"{AUDIO_GROUP}\""));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// One rendition's media playlist made of its chunks' playlists, in order
/// (EVENT; [`to_vod`] finishes it): chunk 0's initialization section for
/// every segment, since every chunk's is the same bytes (see
/// [`crate::transcode::command::chunk_args`]), and each chunk's segments
/// after the one before's. The target duration is the largest any chunk
/// declares.
pub fn join(chunks: &[String]) -> String {
    let target = chunks
        .iter()
        .flat_map(|c| c.lines())
        .filter_map(|l| l.strip_prefix("#EXT-X-TARGETDURATION:"))
        .filter_map(|t| t.trim().parse::<u32>().ok())
        .max()
        .unwrap_or(crate::transcode::command::SEGMENT_SECONDS);
    let mut out = format!(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:0\n\
         #EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-INDEPENDENT-SEGMENTS\n"
    );
    if let Some(map) = chunks.first().and_then(|c| c.lines().find(|l| l.starts_with(MAP_TAG))) {
        out.push_str(map);
        out.push('\n');
    }
    for chunk in chunks {
        // A chunk published before its own playlist was cleaned (by an
        // older vidpipe, mid-deploy) may still list a segment of no media.
        let chunk = without_empty_segments(chunk);
        let mut lines = chunk.lines().map(str::trim);
        while let Some(line) = lines.next() {
            if line.starts_with("#EXTINF:") {
                let Some(uri) = lines.find(|l| !l.is_empty() && !l.starts_with('#')) else { break };
                out.push_str(line);
                out.push('\n');
                out.push_str(uri);
                out.push('\n');
            }
        }
    }
    out
}

/// The subtitles group every variant names when captions exist.
pub const SUBTITLES_GROUP: &str = "subs";
const SUBTITLES_MEDIA: &str = "#EXT-X-MEDIA:TYPE=SUBTITLES,";

/// The directory of a caption language's rendition: `captions-pt-BR`. One
/// level deep, like a video rendition's, so the playback route that signs
/// a rendition's segments serves it too.
pub fn captions_dir(language: &str) -> String {
    format!("captions-{language}")
}

/// The playlist without its segments of no duration. ffmpeg lists one
/// (a 24-byte file with no picture in it) for a chunk that starts after
/// the video stream ends, which a source whose sound outlasts its picture
/// has: the container's duration is the longer stream's. Players stall or
/// fail on a segment with no media.
pub fn without_empty_segments(playlist: &str) -> String {
    let mut out = String::with_capacity(playlist.len());
    let mut lines = playlist.lines();
    while let Some(line) = lines.next() {
        if extinf(line).and_then(|d| d.parse::<f64>().ok()).is_some_and(|d| d <= 0.0) {
            // The segment's URI is the next line that is not a tag.
            lines.find(|l| !l.trim().is_empty() && !l.trim().starts_with('#'));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The duration of each segment a media playlist lists (`EXTINF`), in order.
pub fn segment_durations(playlist: &str) -> Vec<f64> {
    playlist.lines().filter_map(extinf).map(|d| d.parse().unwrap_or(0.0)).collect()
}

/// The duration field of an `EXTINF` line, as written; `None` for any
/// other line.
fn extinf(line: &str) -> Option<&str> {
    let rest = line.trim().strip_prefix("#EXTINF:")?;
    Some(rest.split(',').next().unwrap_or_default().trim())
}

/// A finished subtitles playlist: one WebVTT segment (`seg_NNNNN.vtt`) per
/// media segment of `durations`, so both switch at the same times.
pub fn subtitles(durations: &[f64]) -> String {
    let target = durations.iter().fold(0.0f64, |a, &b| a.max(b)).ceil().max(1.0) as u64;
    let mut out = format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n"
    );
    for (i, d) in durations.iter().enumerate() {
        out.push_str(&format!("#EXTINF:{d:.6},\n{}\n", subtitle_segment(i)));
    }
    out.push_str("#EXT-X-ENDLIST\n");
    out
}

/// The name of a subtitles rendition's `i`th segment.
pub fn subtitle_segment(i: usize) -> String {
    format!("seg_{i:05}.vtt")
}

/// `master` with `tracks` as its subtitles renditions, replacing any it
/// listed: an `EXT-X-MEDIA` line per language and `SUBTITLES=` on every
/// variant. Captions are off until the viewer turns them on (`DEFAULT=NO`);
/// `AUTOSELECT=YES` lets a player pick one from the viewer's language.
pub fn with_subtitles(master: &str, tracks: &[CaptionSummary]) -> String {
    let group = format!(",SUBTITLES=\"{SUBTITLES_GROUP}\"");
    let mut media = String::new();
    for t in tracks {
        let name: String = t.label.chars().filter(|c| *c != '"' && !c.is_control()).collect();
        media.push_str(&format!(
            "{SUBTITLES_MEDIA}GROUP-ID=\"{SUBTITLES_GROUP}\",NAME=\"{name}\",LANGUAGE=\"{}\",DEFAULT=NO,AUTOSELECT=YES,\
             URI=\"{}/{MEDIA_PLAYLIST}\"\n",
            t.language,
            captions_dir(&t.language)
        ));
    }
    let mut out = String::with_capacity(master.len() + media.len() + 64);
    let mut placed = false;
    for line in master.lines().filter(|l| !l.starts_with(SUBTITLES_MEDIA)) {
        if line.starts_with("#EXT-X-STREAM-INF:") {
            if !placed {
                out.push_str(&media);
                placed = true;
            }
            out.push_str(&line.replace(&group, ""));
            if !tracks.is_empty() {
                out.push_str(&group);
            }
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{AudioStream, FrameRate, MediaInfo};
    use crate::transcode::plan::Ladder;

    /// As ffmpeg 5.1 writes it for fMP4 segments.
    const EVENT: &str = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:6\n#EXT-X-MEDIA-SEQUENCE:0\n\
        #EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"init_2.mp4\"\n\
        #EXTINF:6.000000,\nseg_00000.m4s\n#EXTINF:2.000000,\nseg_00001.m4s\n";

    #[test]
    fn event_playlists_become_vod_with_an_end() {
        let vod = to_vod(EVENT);
        assert!(vod.contains("#EXT-X-PLAYLIST-TYPE:VOD\n") && !vod.contains("EVENT"));
        assert!(vod.ends_with("seg_00001.m4s\n#EXT-X-ENDLIST\n"));
        assert_eq!(to_vod(&vod), vod, "idempotent");
    }

    #[test]
    fn players_are_told_to_start_at_the_beginning_while_it_grows_and_after() {
        let event = for_players(EVENT);
        assert!(
            event.starts_with(&format!("#EXTM3U\n#EXT-X-VERSION:7\n{START_TAG}\n#EXT-X-TARGETDURATION")),
            "{event}"
        );
        assert_eq!(for_players(&event), event, "once");
        assert_eq!(files(&event), files(EVENT), "no file added or lost");
        let vod = to_vod(&event);
        assert_eq!(vod.matches("#EXT-X-START:").count(), 1, "{vod}");
        assert_eq!(to_vod(EVENT), vod, "the same VOD from a raw or a published EVENT playlist");
        let bare = for_players("#EXTM3U\n#EXTINF:6,\na.ts\n");
        assert_eq!(bare, format!("#EXTM3U\n{START_TAG}\n#EXTINF:6,\na.ts\n"));
    }

    #[test]
    fn the_init_section_is_a_referenced_file() {
        assert_eq!(files(EVENT), ["init_2.mp4", "seg_00000.m4s", "seg_00001.m4s"]);
        let signed = replace_files(EVENT, |uri| format!("https://s3/{uri}?sig=1"));
        assert!(signed.contains("#EXT-X-MAP:URI=\"https://s3/init_2.mp4?sig=1\"\n"), "{signed}");
        assert!(signed.contains("\nhttps://s3/seg_00001.m4s?sig=1\n"), "{signed}");
        assert_eq!(signed.lines().count(), EVENT.lines().count());
        assert_eq!(replace_files(EVENT, str::to_string), EVENT);
        assert_eq!(foreign_uri_tag(EVENT), None);
        let keyed = EVENT.replace("#EXTINF:6", "#EXT-X-KEY:METHOD=AES-128,URI=\"k.bin\"\n#EXTINF:6");
        assert_eq!(foreign_uri_tag(&keyed), Some("#EXT-X-KEY:METHOD=AES-128,URI=\"k.bin\""));
    }

    #[test]
    fn master_lists_every_variant() {
        let media = MediaInfo {
            width: 1280,
            height: 720,
            frame_rate: FrameRate { num: 30000, den: 1001 },
            duration_seconds: 10.0,
            audio: Some(AudioStream {
                index: 1,
                codec: "aac".into(),
                profile: "LC".into(),
                channels: 2,
                sample_rate: 44_100,
                bit_rate: Some(128_000),
            }),
            demuxer: "mov".into(),
            video_codec: "h264".into(),
            video_stream: 0,
            colour: crate::media::Colour::Sdr,
            subtitles: Vec::new(),
        };
        let text = master(&Plan::new(&media, &Ladder::default()));
        assert_eq!(text.matches("#EXT-X-STREAM-INF").count(), 3);
        assert!(
            text.contains("RESOLUTION=426x240,FRAME-RATE=29.970,CODECS=\"avc1.64001e,mp4a.40.2\"\n240p/index.m3u8\n"),
            "{text}"
        );
        assert!(
            text.contains("RESOLUTION=1280x720,FRAME-RATE=29.970,CODECS=\"avc1.64001f,mp4a.40.2\"\n720p/index.m3u8\n"),
            "{text}"
        );
    }

    #[test]
    fn captions_become_a_subtitles_group_that_every_variant_names() {
        let plain = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n\
            #EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=\"avc1\"\n240p/index.m3u8\n\
            #EXT-X-STREAM-INF:BANDWIDTH=2,CODECS=\"avc1\"\n720p/index.m3u8\n";
        let tracks = [
            CaptionSummary { language: "en".into(), label: "English".into() },
            CaptionSummary { language: "pt-BR".into(), label: "Portuguese \"(BR)\"".into() },
        ];
        let with = with_subtitles(plain, &tracks);
        assert!(with.contains(
            "#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subs\",NAME=\"English\",LANGUAGE=\"en\",\
             DEFAULT=NO,AUTOSELECT=YES,URI=\"captions-en/index.m3u8\"\n"
        ), "{with}");
        assert!(with.contains("NAME=\"Portuguese (BR)\",LANGUAGE=\"pt-BR\""), "{with}");
        assert_eq!(with.matches(",SUBTITLES=\"subs\"\n").count(), 2, "{with}");
        assert_eq!(with_subtitles(&with, &tracks), with, "rewriting keeps one group");
        assert_eq!(with_subtitles(&with, &[]), plain, "and removing every track gives the plain master back");
        assert_eq!(files(&with), files(plain), "EXT-X-MEDIA is not a segment line");
    }

    #[test]
    fn a_subtitles_playlist_has_the_media_segments_durations() {
        assert_eq!(segment_durations(EVENT), [6.0, 2.0]);
        let text = subtitles(&segment_durations(EVENT));
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:6\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n\
             #EXTINF:6.000000,\nseg_00000.vtt\n#EXTINF:2.000000,\nseg_00001.vtt\n#EXT-X-ENDLIST\n"
        );
        assert_eq!(files(&text), ["seg_00000.vtt", "seg_00001.vtt"]);
    }

    #[test]
    fn chunk_playlists_join_into_one_stream_with_the_first_init_section() {
        let chunk = |first: u32, init: &str, durations: &[f64]| {
            let mut p = format!(
                "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:6\n#EXT-X-MEDIA-SEQUENCE:{first}\n\
                 #EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-MAP:URI=\"{init}\"\n"
            );
            for (i, d) in durations.iter().enumerate() {
                p.push_str(&format!("#EXTINF:{d:.6},\nc{first:04}_{i:05}.m4s\n"));
            }
            p + "#EXT-X-ENDLIST\n"
        };
        let joined = join(&[chunk(0, "init_0.mp4", &[6.0, 6.0]), chunk(1, "init_0.mp4", &[6.0, 2.5])]);
        assert_eq!(
            files(&joined),
            ["init_0.mp4", "c0000_00000.m4s", "c0000_00001.m4s", "c0001_00000.m4s", "c0001_00001.m4s"]
        );
        assert_eq!(segment_durations(&joined), [6.0, 6.0, 6.0, 2.5]);
        assert_eq!(joined.matches("#EXT-X-MAP").count(), 1);
        assert!(joined.contains("#EXT-X-PLAYLIST-TYPE:EVENT") && !joined.contains("ENDLIST"));
        // A chunk past the end of the picture, published uncleaned, adds nothing.
        let with_empty = join(&[chunk(0, "init_0.mp4", &[6.0, 2.0]), chunk(1, "init_0.mp4", &[0.0])]);
        assert_eq!(files(&with_empty), ["init_0.mp4", "c0000_00000.m4s", "c0000_00001.m4s"]);
        assert!(joined.contains("#EXT-X-MEDIA-SEQUENCE:0\n"));
        let vod = to_vod(&joined);
        assert!(vod.contains("#EXT-X-PLAYLIST-TYPE:VOD") && vod.ends_with("#EXT-X-ENDLIST\n"));
    }

    #[test]
    fn segments_of_no_duration_are_left_out_and_the_rest_kept_in_order() {
        let chunk =
            "#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:6.000000,\nc0001_00000.m4s\n\
                     #EXTINF:0.000000,\nc0001_00001.m4s\n#EXTINF:2.5,\nc0001_00002.m4s\n#EXT-X-ENDLIST\n";
        let kept = without_empty_segments(chunk);
        assert_eq!(files(&kept), ["init.mp4", "c0001_00000.m4s", "c0001_00002.m4s"]);
        assert_eq!(segment_durations(&kept), [6.0, 2.5]);
        assert!(kept.ends_with("#EXT-X-ENDLIST\n"), "{kept}");
        let untouched = "#EXTM3U\n#EXTINF:6.000000,\nseg_00000.m4s\n";
        assert_eq!(without_empty_segments(untouched), untouched);
    }
}
