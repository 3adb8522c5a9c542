//! What vidpipe knows about a media file, shared by the stage that accepts
//! it (`ingest::probe`, which learns these facts from ffprobe) and the stage
//! that encodes it (`transcode`, which plans from them). It sits apart so that
//! neither depends on the other: `ingest` and `transcode` both use `media`,
//! and `media` uses neither. No I/O.

use std::fmt;

/// What the transcoder needs to know about a source.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaInfo {
    /// Display size: rotation and non-square pixels already applied.
    pub width: u32,
    pub height: u32,
    pub frame_rate: FrameRate,
    pub duration_seconds: f64,
    /// The first audio stream, if any.
    pub audio: Option<AudioStream>,
    /// The demuxer to force with `-f` (one of `ingest::probe::ALLOWED_DEMUXERS`).
    pub demuxer: String,
    pub video_codec: String,
    /// Absolute index of the video stream to encode (cover art is skipped).
    pub video_stream: usize,
    /// How its pictures encode light and colour.
    pub colour: Colour,
    /// Text subtitle streams, which become caption tracks.
    pub subtitles: Vec<SubtitleStream>,
}

/// Subtitle codecs whose text ffmpeg converts to WebVTT. Picture-based ones
/// (DVD, Blu-ray PGS) would need OCR and are left out.
pub const TEXT_SUBTITLE_CODECS: [&str; 6] = ["mov_text", "subrip", "ass", "ssa", "webvtt", "text"];

/// A text subtitle stream of a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubtitleStream {
    /// Absolute stream index.
    pub index: usize,
    pub codec: String,
    /// The container's language tag (`eng`), if any.
    pub language: Option<String>,
}

/// How a source's pictures encode light and colour, as far as the ladder
/// cares: renditions are always SDR BT.709, the one thing every browser and
/// screen shows right, so anything else is converted in the encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    /// BT.709 (or untagged, which players take as BT.709): left untouched.
    Sdr,
    /// SDR on BT.2020 primaries: its colours are mapped into BT.709.
    WideGamutSdr,
    /// HDR10 and Dolby Vision with an HDR10 base: tone-mapped.
    Pq { full_range: bool },
    /// HLG (phones, and Dolby Vision 8.4 on iPhones): tone-mapped.
    Hlg { full_range: bool },
}

impl Colour {
    /// From ffprobe's `color_transfer` and `color_primaries`, and, when the
    /// transfer is not tagged, a Dolby Vision configuration's base-layer
    /// compatibility id (1: HDR10, 4: HLG).
    pub fn of(
        transfer: Option<&str>,
        primaries: Option<&str>,
        full_range: bool,
        dolby_vision_base: Option<i64>,
    ) -> Colour {
        match (transfer, dolby_vision_base) {
            (Some("smpte2084"), _) | (None, Some(1)) => Colour::Pq { full_range },
            (Some("arib-std-b67"), _) | (None, Some(4)) => Colour::Hlg { full_range },
            _ if primaries == Some("bt2020") => Colour::WideGamutSdr,
            _ => Colour::Sdr,
        }
    }
}

/// The audio stream as ffprobe saw it: enough to decide whether renditions
/// can carry it unchanged (see `transcode::plan::Audio`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioStream {
    /// Absolute stream index.
    pub index: usize,
    pub codec: String,
    /// ffprobe's profile name, e.g. `LC` or `HE-AAC`.
    pub profile: String,
    pub channels: u32,
    pub sample_rate: u32,
    /// Unknown for some containers (Matroska).
    pub bit_rate: Option<u32>,
}

/// A frame rate as the exact fraction ffprobe reports (30000/1001 stays exact).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRate {
    pub num: u32,
    pub den: u32,
}

impl FrameRate {
    /// Above this the ladder is encoded at half rate: a lecture gains nothing
    /// from 120 fps and every rung would cost twice as much.
    const MAX_FPS: f64 = 60.0;

    pub fn as_f64(self) -> f64 {
        self.num as f64 / self.den.max(1) as f64
    }

    /// The rate the renditions are encoded at.
    pub fn output(self) -> FrameRate {
        let mut rate = self;
        while rate.as_f64() > Self::MAX_FPS + 0.01 {
            rate = if rate.num.is_multiple_of(2) {
                FrameRate { num: rate.num / 2, den: rate.den }
            } else {
                FrameRate { num: rate.num, den: rate.den * 2 }
            };
        }
        rate
    }
}

impl fmt::Display for FrameRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.num, self.den)
    }
}

/// Largest picture we accept on either side; larger sources are refused at
/// upload rather than exhausting a worker's memory later. Checked on the
/// stored (coded) size as well as the display size: an anamorphic file can
/// display narrow and decode wide.
pub const MAX_DIMENSION: u32 = 8192;
/// Decoders refuse frames with more pixels than this (`-max_pixels`), so a
/// header that lies, or a resolution change mid-stream, cannot make one
/// allocate more.
pub const MAX_PIXELS: u64 = MAX_DIMENSION as u64 * MAX_DIMENSION as u64;
/// Streams in one file: a lecture has a handful; thousands cost the demuxer
/// time and memory (`-max_streams` stops it early).
pub const MAX_STREAMS: usize = 32;
/// The names of the decoders ffmpeg may pick for a codec, for
/// `-codec_whitelist` (which compares decoder names, not codec names).
pub fn decoder_names(codec: &str) -> Vec<String> {
    let names: &[&str] = match codec {
        "av1" => &["libdav1d", "libaom-av1", "av1"],
        "flv1" => &["flv"],
        "msmpeg4v3" => &["msmpeg4"],
        "mp3" => &["mp3float", "mp3"],
        "mp2" => &["mp2float", "mp2"],
        "aac" => &["aac", "aac_fixed"],
        "ac3" => &["ac3", "ac3_fixed"],
        "amr_nb" => &["amrnb", "libopencore_amrnb"],
        "amr_wb" => &["amrwb", "libopencore_amrwb"],
        // Subtitles: ffmpeg's decoder names are not always the codec's.
        "subrip" => &["subrip", "srt"],
        "ass" | "ssa" => &["ass", "ssa"],
        other => return vec![other.to_string()],
    };
    names.iter().map(|n| n.to_string()).collect()
}

/// Input options that bound what a decoder may allocate: the largest
/// picture and the number of streams.
pub fn decoder_limits() -> [String; 4] {
    ["-max_pixels".into(), MAX_PIXELS.to_string(), "-max_streams".into(), (MAX_STREAMS * 2).to_string()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_comes_from_the_transfer_then_dolby_vision_then_the_primaries() {
        assert_eq!(Colour::of(Some("smpte2084"), Some("bt2020"), false, None), Colour::Pq { full_range: false });
        assert_eq!(Colour::of(Some("arib-std-b67"), Some("bt2020"), true, None), Colour::Hlg { full_range: true });
        // Dolby Vision 8.4 (iPhone) with an untagged HLG base; 8.1 with HDR10.
        assert_eq!(Colour::of(None, None, false, Some(4)), Colour::Hlg { full_range: false });
        assert_eq!(Colour::of(None, None, false, Some(1)), Colour::Pq { full_range: false });
        assert_eq!(Colour::of(Some("bt2020-10"), Some("bt2020"), false, None), Colour::WideGamutSdr);
        assert_eq!(Colour::of(Some("bt709"), Some("bt709"), false, None), Colour::Sdr);
        assert_eq!(Colour::of(None, None, false, None), Colour::Sdr, "untagged is taken as BT.709");
    }
}
