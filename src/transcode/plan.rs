//! From what ffprobe saw to the renditions we will encode.
//!
//! Planning is pure: no I/O, so every rule (keep the aspect ratio, even sizes,
//! never upscale, portrait handling) is tested with plain data. A [`Rendition`]
//! can only be made by [`Rendition::fit`], which refuses to upscale, so no
//! later stage can ask ffmpeg for more pixels than the source has.

use std::fmt;
use std::str::FromStr;

use crate::domain::InvalidValue;
use crate::media::{FrameRate, MediaInfo};
use crate::transcode::previews::Previews;

/// The rung heights configured for the ladder (`VIDPIPE_LADDER`), ascending.
///
/// A rung is named after the short side of the picture: `720` is 1280x720 for
/// a landscape source and 720x1280 for a portrait one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ladder(Vec<u32>);

impl Ladder {
    pub const MIN_RUNG: u32 = 96;
    pub const MAX_RUNG: u32 = 2160;

    pub fn rungs(&self) -> &[u32] {
        &self.0
    }
}

impl Default for Ladder {
    fn default() -> Self {
        Ladder(vec![240, 360, 720])
    }
}

impl FromStr for Ladder {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut rungs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let height: u32 = part
                .trim_end_matches('p')
                .parse()
                .map_err(|_| InvalidValue(format!("ladder rung `{part}` is not a height; write e.g. 240,360,720")))?;
            if !(Ladder::MIN_RUNG..=Ladder::MAX_RUNG).contains(&height) || !height.is_multiple_of(2) {
                return Err(InvalidValue(format!(
                    "ladder rung {height} must be an even height between {} and {}",
                    Ladder::MIN_RUNG,
                    Ladder::MAX_RUNG
                )));
            }
            rungs.push(height);
        }
        if rungs.is_empty() {
            return Err(InvalidValue("the ladder is empty; write e.g. 240,360,720".into()));
        }
        rungs.sort_unstable();
        rungs.dedup();
        Ok(Ladder(rungs))
    }
}

impl fmt::Display for Ladder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(u32::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

/// Rate control is capped CRF: CRF sets the quality, a VBV cap (the peak
/// bitrate) keeps every variant inside a BANDWIDTH a player can rely on.
///
/// The caps are the old design's rates at its rungs (800k/1400k/2800k at
/// 240/360/720p, 30 fps), as peak bits per pixel by the picture's short
/// side, so other ladders and frame rates get comparable quality. Between
/// and beyond these points the curve is interpolated in log-log space: 1080p
/// gets 0.067 bit per pixel (4.2 Mbit/s at 30 fps). Smaller pictures get more
/// bits per pixel: each of their pixels covers more of the screen.
const PEAK_BITS_PER_PIXEL: [(f64, f64); 3] = [
    (240.0, 800_000.0 / (426.0 * 240.0 * 30.0)),
    (360.0, 1_400_000.0 / (640.0 * 360.0 * 30.0)),
    (720.0, 2_800_000.0 / (1280.0 * 720.0 * 30.0)),
];
/// CRF at 720p, and the CRF points given up per tripling of the short side
/// (13/15/18 at 240/360/720p). Chosen by VMAF against the old design on
/// camera footage, a screen-recorded lecture and noise (BENCHMARKS.md,
/// "Quality by VMAF"): at these CRFs the cap binds only on busy video, so
/// x264's own rate control (macroblock tree, lookahead) spreads the bits,
/// where a CRF far below the cap (the earlier 7/10/16) left the VBV to
/// starve frames. They keep VMAF within a point of the old design on camera
/// footage and at or above it on noise, for fewer bytes, and a lecture's
/// slides cost about a quarter of the old design's bytes. Higher CRFs save
/// more bytes on the same curve, at visibly less quality than the old
/// design gave.
const CRF_AT_720: f64 = 18.0;
const CRF_PER_TRIPLING: f64 = 5.0;
const CRF_RANGE: (f64, f64) = (5.0, 23.0);
const MIN_PEAK_BPS: u32 = 150_000;
const MAX_PEAK_BPS: u32 = 20_000_000;
/// HLS BANDWIDTH is the peak including container overhead.
const CONTAINER_OVERHEAD: f64 = 1.1;

/// What every rendition carries as sound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audio {
    Silent,
    /// The source's AAC-LC, copied unchanged into every rendition: it is
    /// already what players want, and re-encoding it three times would cost
    /// time and a generation of quality. `bps` is its bitrate.
    Copy {
        bps: u32,
    },
    /// Encoded to AAC-LC stereo 48 kHz at the rendition's rate.
    Encode,
}

impl Audio {
    /// Copy only sources every HLS player decodes as is, at a rate that fits
    /// the smallest rung.
    const MAX_COPY_BPS: u32 = 192_000;

    pub fn for_source(media: &MediaInfo) -> Audio {
        let Some(a) = &media.audio else { return Audio::Silent };
        match a.bit_rate {
            Some(bps)
                if a.codec == "aac"
                    && a.profile == "LC"
                    && (1..=2).contains(&a.channels)
                    && [44_100, 48_000].contains(&a.sample_rate)
                    && bps <= Self::MAX_COPY_BPS =>
            {
                Audio::Copy { bps }
            }
            _ => Audio::Encode,
        }
    }

    pub fn is_silent(self) -> bool {
        self == Audio::Silent
    }
}

/// One output of the ladder. Fields are private: the only way to make one is
/// [`Rendition::fit`] (or the source-sized fallback), which never upscales.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendition {
    name: String,
    width: u32,
    height: u32,
    peak_video_bps: u32,
    crf: u8,
    audio_bps: Option<u32>,
    level: H264Level,
}

impl Rendition {
    /// The rendition for `rung` of a `width`x`height` source, or `None` when
    /// the rung would need more pixels than the source has.
    pub fn fit(rung: u32, width: u32, height: u32, fps: FrameRate, audio: Audio) -> Option<Rendition> {
        let long = round_even(rung as f64 * 16.0 / 9.0);
        let (box_w, box_h) = if width >= height { (long, rung) } else { (rung, long) };
        let scale = (box_w as f64 / width as f64).min(box_h as f64 / height as f64);
        if scale > 1.0 {
            return None;
        }
        let w = round_even(width as f64 * scale).min(floor_even(width)).max(2);
        let h = round_even(height as f64 * scale).min(floor_even(height)).max(2);
        Some(Rendition::sized(format!("{rung}p"), w, h, fps, audio))
    }

    /// The one rendition of a source smaller than the lowest rung: its own
    /// size, made even.
    fn source_sized(width: u32, height: u32, fps: FrameRate, audio: Audio) -> Rendition {
        let (w, h) = (floor_even(width).max(2), floor_even(height).max(2));
        Rendition::sized(format!("{}p", w.min(h)), w, h, fps, audio)
    }

    fn sized(name: String, width: u32, height: u32, fps: FrameRate, audio: Audio) -> Rendition {
        let short_side = width.min(height).max(2) as f64;
        let pixels_per_second = width as f64 * height as f64 * fps.as_f64();
        let peak = (pixels_per_second * peak_bits_per_pixel(short_side)).round() as u32;
        let crf = (CRF_AT_720 - CRF_PER_TRIPLING * (720.0 / short_side).log(3.0))
            .round()
            .clamp(CRF_RANGE.0, CRF_RANGE.1) as u8;
        let audio_bps = match audio {
            Audio::Silent => None,
            Audio::Copy { bps } => Some(bps),
            Audio::Encode => Some(if short_side >= 720.0 { 128_000 } else { 96_000 }),
        };
        Rendition {
            name,
            width,
            height,
            peak_video_bps: peak.clamp(MIN_PEAK_BPS, MAX_PEAK_BPS),
            crf,
            audio_bps,
            level: H264Level::for_picture(width, height, fps),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn width(&self) -> u32 {
        self.width
    }
    pub fn height(&self) -> u32 {
        self.height
    }
    pub fn peak_video_bps(&self) -> u32 {
        self.peak_video_bps
    }
    pub fn crf(&self) -> u8 {
        self.crf
    }
    pub fn audio_bps(&self) -> Option<u32> {
        self.audio_bps
    }
    pub fn level(&self) -> H264Level {
        self.level
    }

    /// The BANDWIDTH attribute of the master playlist: peak video + audio, plus
    /// container overhead.
    pub fn bandwidth(&self) -> u32 {
        ((self.peak_video_bps + self.audio_bps.unwrap_or(0)) as f64 * CONTAINER_OVERHEAD) as u32
    }

    /// The CODECS attribute: H.264 High at our level, plus AAC-LC if audio.
    pub fn codecs(&self) -> String {
        let video = format!("avc1.6400{:02x}", self.level.0);
        match self.audio_bps {
            Some(_) => format!("{video},mp4a.40.2"),
            None => video,
        }
    }
}

/// An H.264 level, as the `level_idc` number (31 = 3.1). Chosen from the
/// picture size and rate so the CODECS string we write is the one encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H264Level(pub u8);

impl H264Level {
    /// (level_idc, max macroblocks per frame, max macroblocks per second), from
    /// Table A-1 of the H.264 specification.
    const TABLE: [(u8, u64, u64); 8] = [
        (30, 1_620, 40_500),
        (31, 3_600, 108_000),
        (32, 5_120, 216_000),
        (40, 8_192, 245_760),
        (42, 8_704, 522_240),
        (50, 22_080, 589_824),
        (51, 36_864, 983_040),
        (52, 36_864, 2_073_600),
    ];

    fn for_picture(width: u32, height: u32, fps: FrameRate) -> H264Level {
        let frame_mbs = (width as u64).div_ceil(16) * (height as u64).div_ceil(16);
        let mbs_per_second = (frame_mbs as f64 * fps.as_f64()).ceil() as u64;
        let idc = Self::TABLE
            .iter()
            .find(|(_, max_fs, max_mbps)| frame_mbs <= *max_fs && mbs_per_second <= *max_mbps)
            .map_or(52, |(idc, _, _)| *idc);
        H264Level(idc)
    }

    /// As ffmpeg's `-level` option wants it: `3.1`.
    pub fn as_option(self) -> String {
        format!("{}.{}", self.0 / 10, self.0 % 10)
    }
}

/// Everything the encoder needs to know, decided before it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub renditions: Vec<Rendition>,
    pub audio: Audio,
    pub fps: FrameRate,
    pub duration_seconds: f64,
    /// The thumbnail candidates and the storyboard grid.
    pub previews: Previews,
}

impl Plan {
    pub fn new(media: &MediaInfo, ladder: &Ladder) -> Plan {
        let fps = media.frame_rate.output();
        let audio = Audio::for_source(media);
        let mut renditions: Vec<Rendition> = ladder
            .rungs()
            .iter()
            .filter_map(|&rung| Rendition::fit(rung, media.width, media.height, fps, audio))
            .collect();
        renditions.dedup_by(|a, b| a.width == b.width && a.height == b.height);
        if renditions.is_empty() {
            renditions.push(Rendition::source_sized(media.width, media.height, fps, audio));
        }
        let largest = renditions.iter().max_by_key(|r| r.width * r.height).expect("at least one rendition");
        let previews = Previews::new(media.duration_seconds, fps, largest.width, largest.height, None);
        Plan { renditions, audio, fps, duration_seconds: media.duration_seconds, previews }
    }

    /// The plan with the thumbnail taken at `seconds` (asked for at
    /// upload) instead of the first good candidate.
    pub fn with_thumbnail_time(mut self, seconds: Option<f64>) -> Plan {
        if let Some(largest) = self.renditions.iter().max_by_key(|r| r.width * r.height) {
            self.previews = Previews::new(self.duration_seconds, self.fps, largest.width, largest.height, seconds);
        }
        self
    }
}

/// [`PEAK_BITS_PER_PIXEL`] at any short side: linear in log-log space
/// between its points, and along the nearest segment beyond them.
fn peak_bits_per_pixel(short_side: f64) -> f64 {
    let points = &PEAK_BITS_PER_PIXEL;
    let segment = points.windows(2).find(|w| short_side <= w[1].0).unwrap_or(&points[points.len() - 2..]);
    let ((x0, y0), (x1, y1)) = (segment[0], segment[1]);
    let slope = (y1 / y0).ln() / (x1 / x0).ln();
    y0 * (short_side / x0).powf(slope)
}

fn round_even(x: f64) -> u32 {
    ((x / 2.0).round() * 2.0) as u32
}

fn floor_even(x: u32) -> u32 {
    x - x % 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::AudioStream;

    fn media(width: u32, height: u32, has_audio: bool) -> MediaInfo {
        // Opus is never copied: the renditions encode AAC.
        let audio = has_audio.then(|| AudioStream {
            index: 1,
            codec: "opus".into(),
            profile: String::new(),
            channels: 2,
            sample_rate: 48_000,
            bit_rate: Some(96_000),
        });
        MediaInfo {
            width,
            height,
            frame_rate: FrameRate { num: 30, den: 1 },
            duration_seconds: 10.0,
            audio,
            demuxer: "mov".into(),
            video_codec: "h264".into(),
            video_stream: 0,
            colour: crate::media::Colour::Sdr,
            subtitles: Vec::new(),
        }
    }

    /// Renders a plan as `name WxH` lines, so each case reads as its expectation.
    fn check(width: u32, height: u32, ladder: &str, expected: &str) {
        let plan = Plan::new(&media(width, height, true), &ladder.parse().unwrap());
        let got: Vec<String> =
            plan.renditions.iter().map(|r| format!("{} {}x{}", r.name(), r.width(), r.height())).collect();
        assert_eq!(got.join(", "), expected, "source {width}x{height}, ladder {ladder}");
    }

    #[test]
    fn ladders_keep_aspect_never_upscale_and_stay_even() {
        check(1920, 1080, "240,360,720", "240p 426x240, 360p 640x360, 720p 1280x720");
        check(1280, 720, "240,360,720", "240p 426x240, 360p 640x360, 720p 1280x720");
        check(640, 480, "240,360,720", "240p 320x240, 360p 480x360");
        check(853, 479, "240,360,720", "240p 426x240, 360p 640x360");
        check(1920, 800, "240,360,720", "240p 426x178, 360p 640x266, 720p 1280x534");
        check(320, 180, "240,360,720", "180p 320x180");
        check(177, 99, "240,360,720", "98p 176x98");
    }

    #[test]
    fn portrait_sources_are_capped_on_their_long_side() {
        check(1080, 1920, "240,360,720", "240p 240x426, 360p 360x640, 720p 720x1280");
        check(720, 1600, "240,360,720", "240p 192x426, 360p 288x640, 720p 576x1280");
        check(360, 640, "240,360,720", "240p 240x426, 360p 360x640");
    }

    #[test]
    fn every_rendition_has_a_bandwidth_and_codecs() {
        let plan = Plan::new(&media(1920, 1080, true), &Ladder::default());
        for r in &plan.renditions {
            assert!(r.bandwidth() > r.peak_video_bps());
            assert!(r.codecs().ends_with(",mp4a.40.2"));
        }
        assert_eq!(plan.renditions[2].level(), H264Level(31));
        // The documented rule, computed here on its own: the old design's
        // rates (at 426x240, 640x360, 1280x720, 30 fps) as bits per pixel,
        // straight lines in log-log space through them and beyond; CRF 18 at
        // 720p, 5 less per tripling of the short side, within 5..=23.
        let anchors = [
            (240.0f64, 800e3 / (426.0 * 240.0 * 30.0)),
            (360.0, 1400e3 / (640.0 * 360.0 * 30.0)),
            (720.0, 2800e3 / (1280.0 * 720.0 * 30.0)),
        ];
        let bpp = |short: f64| -> f64 {
            let (a, b): ((f64, f64), (f64, f64)) =
                if short <= 360.0 { (anchors[0], anchors[1]) } else { (anchors[1], anchors[2]) };
            let slope = (b.1 / a.1).ln() / (b.0 / a.0).ln();
            a.1 * (short / a.0).powf(slope)
        };
        let crf = |short: f64| (18.0 - 5.0 * (720.0 / short).ln() / 3f64.ln()).clamp(5.0, 23.0).round() as u8;
        for (ladder, width, height) in [("240,360,720", 0, 0), ("1080", 1920, 1080), ("144", 256, 144)] {
            let plan = Plan::new(&media(1920, 1080, true), &ladder.parse().unwrap());
            for r in &plan.renditions {
                assert!(
                    width == 0 || (r.width(), r.height()) == (width, height),
                    "{ladder}: {}x{}",
                    r.width(),
                    r.height()
                );
                let short = r.width().min(r.height()) as f64;
                let expected = bpp(short) * (r.width() * r.height()) as f64 * 30.0;
                let peak = r.peak_video_bps() as f64;
                assert!(
                    (peak - expected).abs() <= expected * 0.005 + 1000.0,
                    "{}: peak {peak}, rule {expected:.0}",
                    r.name()
                );
                assert_eq!(r.crf(), crf(short), "{}", r.name());
            }
        }
        // At the old design's own rungs the caps are its rates.
        let kbps: Vec<u32> = plan.renditions.iter().map(|r| r.peak_video_bps() / 1000).collect();
        assert_eq!(kbps, [800, 1400, 2800]);
        assert_eq!(plan.renditions[2].codecs(), "avc1.64001f,mp4a.40.2");
        let silent = Plan::new(&media(1920, 1080, false), &Ladder::default());
        assert!(silent.renditions.iter().all(|r| r.audio_bps().is_none() && !r.codecs().contains("mp4a")));
    }

    #[test]
    fn high_frame_rates_are_halved_and_ntsc_rates_stay_exact() {
        assert_eq!(FrameRate { num: 120, den: 1 }.output(), FrameRate { num: 60, den: 1 });
        assert_eq!(FrameRate { num: 30000, den: 1001 }.output(), FrameRate { num: 30000, den: 1001 });
        assert_eq!(FrameRate { num: 120000, den: 1001 }.output(), FrameRate { num: 60000, den: 1001 });
    }

    #[test]
    fn ladders_parse_and_explain_mistakes() {
        assert_eq!("720, 240,360".parse::<Ladder>().unwrap().rungs(), &[240, 360, 720]);
        assert_eq!("480p".parse::<Ladder>().unwrap().rungs(), &[480]);
        assert!("".parse::<Ladder>().unwrap_err().0.contains("empty"));
        assert!("241".parse::<Ladder>().unwrap_err().0.contains("even"));
        assert!("big".parse::<Ladder>().unwrap_err().0.contains("not a height"));
    }
}
