//! The ffmpeg command lines, built from a [`Plan`].
//!
//! One process decodes the source once and encodes every rendition and the
//! thumbnail: the decoded picture is scaled once to the largest rung, and
//! the smaller rungs are scaled from that (see [`filter_graph`]). Building
//! the arguments is pure so the exact command is covered by tests.

use std::ffi::OsString;
use std::path::Path;

use crate::media::{decoder_limits, decoder_names, Colour, MediaInfo};
use crate::transcode::chunks::ChunkRange;
use crate::transcode::plan::{Audio, Plan, Rendition};
use crate::transcode::previews::{self, ChunkPreviews, Storyboard};

/// x264's SSIM tuning: no psychovisual RD (which spends bits re-creating
/// grain that lecture video does not have) and variance AQ that favours
/// flat areas (slides, walls). Measured: with psychovisual RD put back on
/// the small rungs, their BD-rate against the old design went from -2% to
/// +7% (240p) and from -3% to +6% (360p) on camera footage.
pub const X264_TUNE: &str = "ssim";
/// Largest picture that gets [`SMALL_PRESET`], and largest that gets
/// [`MEDIUM_PRESET`]; anything larger gets [`LARGE_PRESET`].
const SMALL_PICTURE_PIXELS: u32 = 426 * 240;
const MEDIUM_PICTURE_PIXELS: u32 = 640 * 360;
/// x264 presets per rendition size. The large rung is where the time goes,
/// so it gets the fastest preset found that needs fewer bits than the old
/// design's `medium` for the same VMAF on camera footage and noise
/// (`faster` needed 3-4% more, `veryfast` 17-58% more: BENCHMARKS.md,
/// "Quality by VMAF"). The small rungs are a quarter of the pixels, so the
/// slower presets cost little time there.
const SMALL_PRESET: &str = "slow";
const MEDIUM_PRESET: &str = "medium";
const LARGE_PRESET: &str = "fast";

fn x264_preset(r: &Rendition) -> &'static str {
    match r.width() * r.height() {
        p if p <= SMALL_PICTURE_PIXELS => SMALL_PRESET,
        p if p <= MEDIUM_PICTURE_PIXELS => MEDIUM_PRESET,
        _ => LARGE_PRESET,
    }
}

/// x264 options on top of the preset and tune: adaptive quantization a
/// little weaker than x264's default 1.0, higher SSIM at every rung for
/// the same bytes (ARCHITECTURE.md, "Encoder settings").
const X264_PARAMS: &str = "aq-strength=0.8";
/// Seconds between forced keyframes. Every rendition sees the same
/// timestamps, so their IDR frames, and therefore their segment boundaries,
/// line up and players can switch between them at any segment.
pub const KEYFRAME_INTERVAL: u32 = 2;
/// Target segment length; a multiple of the keyframe interval.
pub const SEGMENT_SECONDS: u32 = 6;
/// Segments are fragmented MP4 (CMAF-style, HLS version 7): a few percent
/// smaller than MPEG-TS at these rates, where TS packet headers and padded
/// audio packets add up, and playable by every current HLS player.
pub const SEGMENT_PATTERN: &str = "seg_%05d.m4s";
/// Name template of the fMP4 initialization section: with more than one
/// rendition ffmpeg numbers it per variant (`init_2.mp4`); each media
/// playlist names its own in `EXT-X-MAP`.
pub const INIT_FILENAME_TEMPLATE: &str = "init.mp4";
pub const MEDIA_PLAYLIST: &str = "index.m3u8";
pub const MASTER_PLAYLIST: &str = "master.m3u8";
pub const THUMBNAIL: &str = "thumbnail.jpg";

/// Decoding stops this far past the probed duration: a container can claim
/// one second and hold an hour, and the work must follow the claim we
/// checked, not what the file turns out to hold.
const DURATION_SLACK_SECONDS: f64 = 2.0;
/// More failed frames than this fraction fails the run (ffmpeg exits 69)
/// instead of encoding a video of concealment artefacts.
pub const MAX_DECODE_ERROR_RATE: &str = "0.25";

/// Options before `-i` that make reading an untrusted file safe: no stdin, no
/// protocol but plain files, the demuxer the probe found (so the file is not
/// probed again and cannot turn out to be a playlist), only the decoders of
/// the streams we checked, no frame larger than the probe allows, and no
/// more input time than the probed duration.
fn safe_input(media: &MediaInfo, input: &Path, decoders: Vec<String>) -> Vec<OsString> {
    safe_input_from(media, input, decoders, None)
}

/// [`safe_input`] of one chunk: from its start, and no more input time
/// than its length (or, for the last, than the probed duration left).
fn safe_input_from(
    media: &MediaInfo,
    input: &Path,
    decoders: Vec<String>,
    range: Option<&ChunkRange>,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["-nostdin", "-hide_banner", "-loglevel", "error", "-protocol_whitelist", "file"]
        .into_iter()
        .map(OsString::from)
        .collect();
    args.extend(["-max_error_rate".into(), MAX_DECODE_ERROR_RATE.into()]);
    args.extend(["-codec_whitelist".into(), decoders.join(",").into()]);
    args.extend(decoder_limits().map(OsString::from));
    let start = range.map_or(0.0, ChunkRange::start_seconds);
    let length = range.and_then(ChunkRange::length_seconds).unwrap_or(media.duration_seconds - start).max(0.0);
    let bound = length + DURATION_SLACK_SECONDS.max(media.duration_seconds * 0.01);
    if start > 0.0 {
        // Before `-i`: seek to the keyframe before `start`, then decode and
        // drop what comes before it, so the chunk starts at that frame.
        args.extend(["-ss".into(), format!("{start:.3}").into()]);
    }
    args.extend(["-t".into(), format!("{bound:.3}").into()]);
    args.extend(["-f".into(), media.demuxer.clone().into(), "-i".into(), input.as_os_str().to_owned()]);
    args
}

/// The single ffmpeg run that writes every rendition as HLS into `out_dir`:
/// `<name>/index.m3u8`, `<name>/init_N.mp4` (`init.mp4` for a one-rendition
/// ladder) and `<name>/seg_NNNNN.m4s`.
///
/// It also writes the thumbnail candidates, their statistics and the
/// storyboard sprite (see [`filter_graph`] and [`previews`]).
///
/// Playlists are written as EVENT playlists while encoding, so the publisher
/// can ship each segment as soon as its playlist lists it.
pub fn ladder_args(media: &MediaInfo, plan: &Plan, input: &Path, out_dir: &Path) -> Vec<OsString> {
    let mut decoders = decoder_names(&media.video_codec);
    if let Some(audio) = &media.audio {
        decoders.extend(decoder_names(&audio.codec));
    }
    let mut args = safe_input(media, input, decoders);
    args.extend(["-filter_complex".into(), filter_graph(media, plan, out_dir).into()]);

    let audio_input = media.audio.as_ref().filter(|_| !plan.audio.is_silent()).map(|a| a.index);
    for i in 0..plan.renditions.len() {
        args.extend(["-map".into(), format!("[v{i}]").into()]);
        // One audio stream cannot feed two variants, so it is mapped once per
        // rendition.
        if let Some(audio) = audio_input {
            args.extend(["-map".into(), format!("0:{audio}").into()]);
        }
    }

    args.extend(video_encoder_args(plan));
    for (i, r) in plan.renditions.iter().enumerate() {
        if let (Audio::Encode, Some(bps)) = (plan.audio, r.audio_bps()) {
            args.extend([format!("-b:a:{i}").into(), bps.to_string().into()]);
        }
    }
    match plan.audio {
        Audio::Silent => {}
        // ADTS (MPEG-TS sources) must become MP4's AudioSpecificConfig; the
        // filter passes MP4 sources through.
        Audio::Copy { .. } => args.extend(["-c:a", "copy", "-bsf:a", "aac_adtstoasc"].map(OsString::from)),
        Audio::Encode => args.extend(["-c:a", "aac", "-ac", "2", "-ar", "48000"].map(OsString::from)),
    }

    let stream_map: Vec<String> = plan
        .renditions
        .iter()
        .enumerate()
        .map(|(i, r)| match audio_input {
            Some(_) => format!("v:{i},a:{i},name:{}", r.name()),
            None => format!("v:{i},name:{}", r.name()),
        })
        .collect();
    args.extend(hls_output(out_dir, "%v", SEGMENT_PATTERN, Some(stream_map.join(" "))));

    // More outputs: the thumbnail candidates and the storyboard's tiles.
    args.extend(preview_outputs(out_dir));
    args
}

/// The HLS output, fMP4 segments of [`SEGMENT_SECONDS`]: the playlist and
/// segments go to `out_dir/<dir>/` (`%v`: one directory per variant of
/// `stream_map`). Playlists are EVENT playlists, listing each segment once
/// it is complete, so the publisher can ship segments while ffmpeg runs.
fn hls_output(out_dir: &Path, dir: &str, segment_pattern: &str, stream_map: Option<String>) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "-f",
        "hls",
        "-hls_time",
        &SEGMENT_SECONDS.to_string(),
        "-hls_playlist_type",
        "event",
        "-hls_flags",
        "independent_segments+temp_file",
        "-hls_segment_type",
        "fmp4",
        "-hls_fmp4_init_filename",
        INIT_FILENAME_TEMPLATE,
    ]
    .map(OsString::from)
    .into();
    args.extend(["-hls_segment_filename".into(), out_dir.join(dir).join(segment_pattern).into_os_string()]);
    if let Some(map) = stream_map {
        args.extend(["-var_stream_map".into(), map.into()]);
    }
    args.extend(["-progress", "pipe:1", "-nostats"].map(OsString::from));
    args.push(out_dir.join(dir).join(MEDIA_PLAYLIST).into_os_string());
    args
}

/// How far every chunk's and the audio rendition's timestamps are moved:
/// x264's B-frame reordering delay, two frames. A whole-source encode gets
/// the same shift from the muxer (its first decoding timestamp would be
/// negative), so chunked and whole encodes start their pictures at the same
/// time; a chunk moved by less would be shifted again on its own by the
/// muxer (only the first chunk's timestamps start below zero), and its
/// frames would overlap the next chunk's.
pub fn chunk_time_offset(plan: &Plan) -> f64 {
    2.0 / plan.fps.as_f64()
}

/// One chunk of a chunked encode: every rendition of `range`, video only,
/// into `out_dir/<rendition>/` (segments named by
/// [`ChunkRange::segment_pattern`], the initialization section `init_N.mp4`
/// as in [`ladder_args`]).
///
/// Each chunk's timestamps are the source's (`-output_ts_offset`), and
/// `frag_discont` writes them into every fragment's decode time instead of
/// into an edit list of the initialization section: so every chunk's init
/// section is the same bytes, and the segments of all chunks play as one
/// stream after chunk 0's. It also writes the thumbnail candidates and the
/// storyboard tiles of the whole video's that fall in the range
/// (`previews`, see [`ChunkPreviews`]).
pub fn chunk_args(
    media: &MediaInfo,
    plan: &Plan,
    input: &Path,
    out_dir: &Path,
    range: &ChunkRange,
    previews: &ChunkPreviews,
) -> Vec<OsString> {
    let mut args = safe_input_from(media, input, decoder_names(&media.video_codec), Some(range));
    let mut graph = scaled_renditions(media, plan, range.length_seconds());
    graph.push_str(&candidates_filter(&previews.selected_frames(), out_dir));
    graph.push_str(&tiles_filter(&format!("select={}", previews.tile_select()), &previews.storyboard));
    args.extend(["-filter_complex".into(), graph.into()]);
    for i in 0..plan.renditions.len() {
        args.extend(["-map".into(), format!("[v{i}]").into()]);
    }
    args.extend(video_encoder_args(plan));
    let offset = range.start_seconds() + chunk_time_offset(plan);
    args.extend(["-output_ts_offset".into(), format!("{offset:.6}").into()]);
    args.extend(["-hls_segment_options", "movflags=+frag_discont"].map(OsString::from));
    let stream_map: Vec<String> =
        plan.renditions.iter().enumerate().map(|(i, r)| format!("v:{i},name:{}", r.name())).collect();
    args.extend(hls_output(out_dir, "%v", &range.segment_pattern(), Some(stream_map.join(" "))));
    args.extend(preview_outputs(out_dir));
    args
}

/// The directory of a chunked lecture's one audio rendition.
pub const AUDIO_DIR: &str = "audio";

/// The sound of the whole source, once, as an audio-only rendition in
/// `out_dir/audio/` for a chunked encode: copied when it is already AAC-LC
/// (see [`Audio`]), otherwise AAC-LC stereo at the highest rate any
/// rendition would have had. Moved by the same offset as the chunks, so
/// sound and picture keep the source's sync.
pub fn audio_args(media: &MediaInfo, plan: &Plan, input: &Path, out_dir: &Path) -> Vec<OsString> {
    let Some(audio) = &media.audio else { return Vec::new() };
    let bps = plan.renditions.iter().filter_map(Rendition::audio_bps).max().unwrap_or(128_000);
    let mut args = safe_input(media, input, decoder_names(&audio.codec));
    args.extend(["-map".into(), format!("0:{}", audio.index).into(), "-vn".into()]);
    match plan.audio {
        Audio::Copy { .. } => args.extend(["-c:a", "copy", "-bsf:a", "aac_adtstoasc"].map(OsString::from)),
        Audio::Encode | Audio::Silent => {
            args.extend(["-c:a", "aac", "-ac", "2", "-ar", "48000", "-b:a"].map(OsString::from));
            args.push(bps.to_string().into());
        }
    }
    args.extend(["-output_ts_offset".into(), format!("{:.6}", chunk_time_offset(plan)).into()]);
    args.extend(hls_output(out_dir, AUDIO_DIR, SEGMENT_PATTERN, None));
    args
}

/// `args` (a [`ladder_args`] or [`chunk_args`] command) with at most
/// `threads` threads for each of its stages: decoding (`-threads` before
/// `-i`), the filter graph (`-filter_complex_threads`) and each encoder of
/// the ladder's output (`-threads` after the graph, before the HLS output's
/// options: x264's frame threads). `None` leaves the choice to ffmpeg and
/// x264, which take every core and more. A budget for machines shared with
/// other work; a hard cap on cores is `taskset` or a cgroup.
pub fn with_threads(mut args: Vec<OsString>, threads: Option<u16>) -> Vec<OsString> {
    let Some(n) = threads else { return args };
    let n = OsString::from(n.to_string());
    if let Some(graph) = args.iter().position(|a| a == "-filter_complex") {
        let at = (graph + 2).min(args.len());
        args.splice(at..at, ["-threads".into(), n.clone()]);
    }
    if let Some(input) = args.iter().position(|a| a == "-i") {
        args.splice(input..input, ["-threads".into(), n.clone()]);
    }
    args.splice(0..0, ["-filter_complex_threads".into(), n]);
    args
}

/// The x264 settings of every rendition: the same keyframe times in each
/// (so segment boundaries line up), quality and rate caps per rung.
fn video_encoder_args(plan: &Plan) -> Vec<OsString> {
    let mut args = Vec::new();
    let keyint = (plan.fps.as_f64() * KEYFRAME_INTERVAL as f64 * 2.0).ceil() as u32;
    let common = [
        "-c:v".to_string(),
        "libx264".into(),
        "-tune".into(),
        X264_TUNE.into(),
        "-profile:v".into(),
        "high".into(),
        // No scene-cut keyframes: they would differ between renditions.
        "-sc_threshold".into(),
        "0".into(),
        "-g".into(),
        keyint.to_string(),
        "-force_key_frames".into(),
        format!("expr:gte(t,n_forced*{KEYFRAME_INTERVAL})"),
        // Every rendition says what it is: SDR BT.709, whatever the source
        // was tagged (a tag carried over from an HDR source would make
        // players show the converted picture wrong again).
        "-color_primaries".into(),
        "bt709".into(),
        "-color_trc".into(),
        "bt709".into(),
        "-colorspace".into(),
        "bt709".into(),
    ];
    args.extend(common.into_iter().map(OsString::from));
    for (i, r) in plan.renditions.iter().enumerate() {
        args.extend([
            format!("-preset:v:{i}").into(),
            x264_preset(r).into(),
            format!("-crf:v:{i}").into(),
            r.crf().to_string().into(),
            format!("-maxrate:v:{i}").into(),
            r.peak_video_bps().to_string().into(),
            format!("-bufsize:v:{i}").into(),
            (r.peak_video_bps() * 2).to_string().into(),
            format!("-level:v:{i}").into(),
            r.level().as_option().into(),
            format!("-x264-params:v:{i}").into(),
            X264_PARAMS.into(),
        ]);
    }
    args
}

/// The small run after the encode that tiles the storyboard's pictures
/// into the sprite; the tiles come in the order they were written.
pub fn sprite_args(board: &Storyboard, out_dir: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["-nostdin", "-hide_banner", "-loglevel", "error", "-protocol_whitelist", "file"]
        .into_iter()
        .map(OsString::from)
        .collect();
    args.extend(["-codec_whitelist", "mjpeg", "-f", "image2", "-framerate", "1", "-i"].map(OsString::from));
    args.push(out_dir.join(previews::TILE_PATTERN).into_os_string());
    args.extend(["-vf".into(), format!("tile={}x{}", board.columns, board.rows).into()]);
    args.extend(
        ["-frames:v", "1", "-c:v", "mjpeg", "-q:v", "5", "-progress", "pipe:1", "-nostats", "-y"].map(OsString::from),
    );
    args.push(out_dir.join(previews::STORYBOARD_IMAGE).into_os_string());
    args
}

/// `path` as the value of a filter option inside a filter graph: escaped
/// once for the option (`\`, `'`, `:`) and once for the graph (`\`, `'`,
/// `[`, `]`, `,`, `;`), as ffmpeg's filter documentation describes.
fn filter_path(path: &Path) -> String {
    let escape = |text: &str, special: &[char]| {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            if c == '\\' || special.contains(&c) {
                out.push('\\');
            }
            out.push(c);
        }
        out
    };
    let option = escape(&path.to_string_lossy(), &['\'', ':']);
    escape(&option, &['\'', '[', ']', ',', ';'])
}

/// Where [`subtitle_args`] writes stream `index`'s text.
pub fn subtitle_file(out_dir: &Path, index: usize) -> std::path::PathBuf {
    out_dir.join(format!("subtitles-{index}.vtt"))
}

/// The ffmpeg run that converts every text subtitle stream of the source
/// to WebVTT ([`subtitle_file`]): demuxing only, no picture or sound is
/// decoded. Each file stops growing past the caption size limit.
pub fn subtitle_args(media: &MediaInfo, input: &Path, out_dir: &Path) -> Vec<OsString> {
    let decoders = media.subtitles.iter().flat_map(|s| decoder_names(&s.codec)).collect();
    let mut args = safe_input(media, input, decoders);
    for stream in &media.subtitles {
        args.extend([
            "-map".into(),
            format!("0:{}", stream.index).into(),
            "-c:s".into(),
            "webvtt".into(),
            "-fs".into(),
            (crate::captions::MAX_CAPTION_BYTES + 1).to_string().into(),
            "-f".into(),
            "webvtt".into(),
            subtitle_file(out_dir, stream.index).into_os_string(),
        ]);
    }
    args.extend(["-progress", "pipe:1", "-nostats"].map(OsString::from));
    args
}

/// The filter graph: decode once, scale once to the largest rendition, and
/// scale the smaller ones from that picture rather than from the source.
/// Scaling runs on ffmpeg's main thread, in series with everything else, so
/// scaling a 1080p (or 4K) picture three times is a bottleneck; from 720p the
/// small rungs cost a fraction, and SSIM against the source scaled directly
/// moved by less than 0.00002 (ARCHITECTURE.md, "Encoder settings").
///
/// Filters that bring a picture of `colour` to SDR BT.709 (none for SDR
/// sources: no cost where nothing is wrong). HDR is made linear, its
/// primaries mapped to BT.709, then tone-mapped with Möbius, which keeps
/// the contrast and colours of everything an SDR screen can show and only
/// compresses what is brighter; the input's encoding is named explicitly,
/// since the tags of a scaled frame are not always carried to zscale.
fn to_bt709(colour: Colour) -> String {
    let range = |full: bool| if full { "full" } else { "limited" };
    let to_sdr = "zscale=t=bt709:m=bt709:r=limited";
    match colour {
        Colour::Sdr => String::new(),
        Colour::WideGamutSdr => {
            format!(",zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,{to_sdr}")
        }
        Colour::Pq { full_range } | Colour::Hlg { full_range } => {
            let transfer = if matches!(colour, Colour::Pq { .. }) { "smpte2084" } else { "arib-std-b67" };
            format!(
                ",zscale=tin={transfer}:pin=bt2020:min=bt2020nc:rin={}:t=linear:npl=100,format=gbrpf32le,\
                 zscale=p=bt709,tonemap=tonemap=mobius,{to_sdr}",
                range(full_range)
            )
        }
    }
}

/// The thumbnail candidates and the storyboard come from the largest
/// picture too (see [`previews`]). Candidates are cut out by frame number,
/// so a source whose timestamps do not start at zero gives the same frames;
/// their statistics go to a file in `out_dir`. All of it costs a few JPEGs
/// and small scales; a second ffmpeg would decode the source again.
fn filter_graph(media: &MediaInfo, plan: &Plan, out_dir: &Path) -> String {
    let mut graph = scaled_renditions(media, plan, None);
    let previews = &plan.previews;
    graph.push_str(&candidates_filter(&previews.selected_frames(), out_dir));
    graph.push_str(&tiles_filter(&format!("fps=1/{}", previews.storyboard.interval), &previews.storyboard));
    graph
}

/// The thumbnail candidates' branch: the frames `selected` pass the select;
/// scdet measures how much each differs from the one before (its pair's
/// first frame). JPEG wants full-range YUV, the statistics are taken before.
fn candidates_filter(selected: &[u64], out_dir: &Path) -> String {
    let frames: Vec<String> = selected.iter().map(|f| format!("eq(n\\,{f})")).collect();
    format!(
        ";[t]select={},scdet=threshold=100,signalstats,metadata=mode=print:file={},format=yuvj420p[thumb]",
        frames.join("+"),
        filter_path(&out_dir.join(previews::CANDIDATE_STATS))
    )
}

/// The storyboard's branch: the tiles `pick` passes, scaled.
fn tiles_filter(pick: &str, board: &Storyboard) -> String {
    format!(";[s]{pick},scale={}:{}:flags=bicubic,setsar=1,format=yuvj420p[story]", board.tile_width, board.tile_height)
}

/// The outputs of the candidates and tiles branches: each frame as it
/// comes (not repeated to a constant rate), as JPEG files.
fn preview_outputs(out_dir: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    args.extend(
        ["-map", "[thumb]", "-fps_mode", "passthrough", "-c:v", "mjpeg", "-q:v", "3", "-f", "image2"]
            .map(OsString::from),
    );
    args.push(out_dir.join(previews::CANDIDATE_PATTERN).into_os_string());
    args.extend(
        ["-map", "[story]", "-fps_mode", "passthrough", "-c:v", "mjpeg", "-q:v", "5", "-f", "image2"]
            .map(OsString::from),
    );
    args.push(out_dir.join(previews::TILE_PATTERN).into_os_string());
    args
}

/// The part of the filter graph that makes `[v0]`, `[v1]`... and `[t]`,
/// `[s]` for the previews, from the frames before `trim_end` seconds (a
/// chunk's length) if given.
fn scaled_renditions(media: &MediaInfo, plan: &Plan, trim_end: Option<f64>) -> String {
    let n = plan.renditions.len();
    let scale = |r: &Rendition| format!("scale={}:{}:flags=bicubic,setsar=1", r.width(), r.height());
    let largest = (0..n).max_by_key(|&i| plan.renditions[i].width() * plan.renditions[i].height()).unwrap_or(0);
    let smaller: Vec<usize> = (0..n).filter(|&i| i != largest).collect();
    let mut graph = format!("[0:{}]", media.video_stream);
    if let Some(end) = trim_end {
        // By timestamp, so each frame lands in exactly one chunk.
        graph.push_str(&format!("trim=end={end:.6},"));
    }
    if plan.fps != media.frame_rate {
        graph.push_str(&format!("fps={},", plan.fps));
    }
    // Converted at the largest rendition's size: a 4K HDR source costs the
    // float maths of a 720p picture.
    graph.push_str(&format!(
        "{}{},format=yuv420p,split={}[v{largest}]",
        scale(&plan.renditions[largest]),
        to_bt709(media.colour),
        n + 2
    ));
    for i in &smaller {
        graph.push_str(&format!("[c{i}]"));
    }
    graph.push_str("[t][s]");
    for i in smaller {
        graph.push_str(&format!(";[c{i}]{}[v{i}]", scale(&plan.renditions[i])));
    }
    graph
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{AudioStream, FrameRate};
    use crate::transcode::plan::Ladder;

    #[test]
    fn a_thread_budget_reaches_the_decoder_the_filters_and_the_encoders() {
        let m = media(None);
        let plan = Plan::new(&m, &Ladder::default());
        let args = ladder_args(&m, &plan, Path::new("/in/src.mp4"), Path::new("/out"));
        assert_eq!(with_threads(args.clone(), None), args, "no budget: ffmpeg's own choice");
        let budget: Vec<String> =
            with_threads(args, Some(2)).iter().map(|a| a.to_string_lossy().into_owned()).collect();
        let at = |what: &str| budget.iter().position(|a| a == what).unwrap();
        assert_eq!(budget[..2], ["-filter_complex_threads", "2"], "a global option, first");
        assert_eq!(budget[at("-i") - 2..at("-i")], ["-threads", "2"], "an input option: the decoder");
        let graph = at("-filter_complex");
        assert_eq!(budget[graph + 2..graph + 4], ["-threads", "2"], "an output option of the HLS output: x264");
        assert_eq!(budget.iter().filter(|a| *a == "-threads").count(), 2, "{budget:?}");
    }

    #[test]
    fn only_sources_that_are_not_sdr_bt709_get_colour_filters() {
        assert_eq!(to_bt709(Colour::Sdr), "", "SDR pays nothing");
        let hdr = to_bt709(Colour::Hlg { full_range: false });
        assert!(
            hdr.contains("tin=arib-std-b67") && hdr.contains("rin=limited") && hdr.contains("tonemap=tonemap=mobius")
        );
        assert!(to_bt709(Colour::Pq { full_range: true }).contains("tin=smpte2084:pin=bt2020:min=bt2020nc:rin=full"));
        let wide = to_bt709(Colour::WideGamutSdr);
        assert!(wide.contains("zscale=p=bt709") && !wide.contains("tonemap"), "{wide}");
    }

    fn media(audio: Option<AudioStream>) -> MediaInfo {
        MediaInfo {
            width: 1920,
            height: 1080,
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

    fn aac(profile: &str, channels: u32, bit_rate: Option<u32>) -> Option<AudioStream> {
        Some(AudioStream {
            index: 1,
            codec: "aac".into(),
            profile: profile.into(),
            channels,
            sample_rate: 48_000,
            bit_rate,
        })
    }

    fn joined(args: &[OsString]) -> String {
        args.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn ladder_command_decodes_and_scales_the_source_once() {
        let m = media(aac("HE-AAC", 2, Some(64_000)));
        let plan = Plan::new(&m, &Ladder::default());
        let args = joined(&ladder_args(&m, &plan, Path::new("/in/src.mp4"), Path::new("/out")));
        assert!(
            args.starts_with(
                "-nostdin -hide_banner -loglevel error -protocol_whitelist file -max_error_rate 0.25 \
                 -codec_whitelist h264,aac,aac_fixed -max_pixels 67108864 -max_streams 64 -t 12.000 -f mov -i /in/src.mp4"
            ),
            "{args}"
        );
        assert!(
            args.contains(
                "-filter_complex [0:0]scale=1280:720:flags=bicubic,setsar=1,format=yuv420p,split=5[v2][c0][c1][t][s];\
                 [c0]scale=426:240:flags=bicubic,setsar=1[v0];[c1]scale=640:360:flags=bicubic,setsar=1[v1];\
                 [t]select=eq(n\\,0)+eq(n\\,30)+eq(n\\,45)+eq(n\\,60)+eq(n\\,75)+eq(n\\,90)+eq(n\\,105)+eq(n\\,120)+eq(n\\,135)+eq(n\\,150)+eq(n\\,165),\
                 scdet=threshold=100,signalstats,metadata=mode=print:file=/out/thumbnail-candidates.txt,format=yuvj420p[thumb];\
                 [s]fps=1/2,scale=160:90:flags=bicubic,setsar=1,format=yuvj420p[story] "
            ),
            "{args}"
        );
        assert!(args.contains("-map [v0] -map 0:1 -map [v1] -map 0:1 -map [v2] -map 0:1"), "{args}");
        assert!(args.contains("-c:v libx264 -tune ssim -profile:v high"), "{args}");
        assert!(args.contains("-force_key_frames expr:gte(t,n_forced*2)"), "{args}");
        // Each rung's preset and rate control as documented: slow, medium
        // and fast from the smallest rung up, its plan's CRF, the peak as
        // maxrate, a VBV buffer of twice the peak, its level, weaker AQ;
        // 96 kbit/s audio below 720p.
        for (i, (r, preset)) in plan.renditions.iter().zip(["slow", "medium", "fast"]).enumerate() {
            let audio = if r.height() < 720 { 96_000 } else { 128_000 };
            let expected = format!(
                "-preset:v:{i} {preset} -crf:v:{i} {} -maxrate:v:{i} {peak} -bufsize:v:{i} {} -level:v:{i} {} -x264-params:v:{i} aq-strength=0.8 ",
                r.crf(),
                2 * r.peak_video_bps(),
                r.level().as_option(),
                peak = r.peak_video_bps(),
            );
            assert!(args.contains(&expected), "{expected}\n{args}");
            assert!(args.contains(&format!(" -b:a:{i} {audio} ")), "{args}");
        }
        assert!(args.contains("-c:a aac -ac 2 -ar 48000"), "HE-AAC is re-encoded: {args}");
        assert!(
            args.contains(
                "-hls_segment_type fmp4 -hls_fmp4_init_filename init.mp4 -hls_segment_filename /out/%v/seg_%05d.m4s"
            ),
            "{args}"
        );
        assert!(args.contains("-var_stream_map v:0,a:0,name:240p v:1,a:1,name:360p v:2,a:2,name:720p"), "{args}");
        assert!(
            args.ends_with(
                "-progress pipe:1 -nostats /out/%v/index.m3u8 \
                 -map [thumb] -fps_mode passthrough -c:v mjpeg -q:v 3 -f image2 /out/thumbnail-candidate-%02d.jpg \
                 -map [story] -fps_mode passthrough -c:v mjpeg -q:v 5 -f image2 /out/storyboard-tile-%03d.jpg"
            ),
            "thumbnail candidates (from frame 30 of a 10 s video at 30 fps, each with the frame 0.5 s on) and the \
             storyboard are more outputs: {args}"
        );
        assert_eq!(args.matches(" -i ").count(), 1, "one input, decoded once");
    }

    #[test]
    fn aac_lc_sound_is_copied_into_every_rendition() {
        let m = media(aac("LC", 2, Some(128_000)));
        let plan = Plan::new(&m, &Ladder::default());
        assert_eq!(plan.audio, Audio::Copy { bps: 128_000 });
        let args = joined(&ladder_args(&m, &plan, Path::new("/in/src.mp4"), Path::new("/out")));
        assert!(args.contains("-c:a copy -bsf:a aac_adtstoasc"), "{args}");
        assert!(!args.contains("-b:a") && !args.contains("-c:a aac"), "{args}");
        assert!(plan.renditions.iter().all(|r| r.audio_bps() == Some(128_000)), "BANDWIDTH counts the copied rate");
        // Too fast to fit the small rungs, of unknown rate, or 5.1: re-encoded.
        for audio in [aac("LC", 2, Some(320_000)), aac("LC", 2, None), aac("LC", 6, Some(128_000))] {
            assert_eq!(Plan::new(&media(audio), &Ladder::default()).audio, Audio::Encode);
        }
    }

    #[test]
    fn paths_in_the_filter_graph_are_escaped_twice() {
        assert_eq!(filter_path(Path::new("/plain/dir")), "/plain/dir");
        // `:` ends an option value, `,` a filter, `'` quotes, at two levels.
        assert_eq!(filter_path(Path::new("/a:b,c'd[e]")), "/a\\\\:b\\,c\\\\\\'d\\[e\\]");
    }

    #[test]
    fn subtitle_streams_are_converted_by_demuxing_only() {
        let mut m = media(aac("LC", 2, None));
        m.subtitles = vec![
            crate::media::SubtitleStream { index: 2, codec: "mov_text".into(), language: Some("eng".into()) },
            crate::media::SubtitleStream { index: 3, codec: "subrip".into(), language: None },
        ];
        let args = joined(&subtitle_args(&m, Path::new("/in/src.mp4"), Path::new("/w")));
        assert!(args.contains("-codec_whitelist mov_text,subrip,srt "), "no picture or sound decoder: {args}");
        assert!(args.contains(
            "-map 0:2 -c:s webvtt -fs 1048577 -f webvtt /w/subtitles-2.vtt -map 0:3 -c:s webvtt -fs 1048577 -f webvtt /w/subtitles-3.vtt"
        ), "{args}");
    }

    #[test]
    fn silent_sources_get_a_video_only_ladder() {
        let m = media(None);
        let plan = Plan::new(&m, &Ladder::default());
        let args = joined(&ladder_args(&m, &plan, Path::new("/in/src.mp4"), Path::new("/out")));
        assert!(!args.contains("-map 0:1") && !args.contains("-c:a") && !args.contains("a:0"), "{args}");
        assert!(args.contains("-var_stream_map v:0,name:240p v:1,name:360p v:2,name:720p"), "{args}");
    }

    #[test]
    fn a_one_rung_ladder_still_gets_a_thumbnail() {
        let m = MediaInfo { width: 320, height: 180, ..media(None) };
        let plan = Plan::new(&m, &Ladder::default());
        let args = joined(&ladder_args(&m, &plan, Path::new("/in/src.mp4"), Path::new("/out")));
        assert!(
            args.contains(
                "-filter_complex [0:0]scale=320:180:flags=bicubic,setsar=1,format=yuv420p,split=3[v0][t][s];[t]select="
            ),
            "{args}"
        );
    }
}
