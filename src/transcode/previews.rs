//! Seek previews and the thumbnail, both made by the encode's own ffmpeg
//! process from pictures it decodes anyway.
//!
//! **Storyboard.** One small picture every [`Storyboard::interval`] seconds,
//! tiled after the encode into one JPEG sprite (a second ffmpeg over at
//! most [`MAX_TILES`] small JPEGs, not over the source), and a WebVTT file
//! whose cues name each tile
//! (`storyboard.jpg#xywh=x,y,w,h`): the format Video.js, Mux and hls.js
//! UIs read for previews over the seek bar. The interval grows with the
//! duration so the sprite holds at most [`MAX_TILES`] tiles.
//!
//! **Thumbnail.** The frame at a time asked for at upload; otherwise the
//! first good one of a few candidates from 10% of the duration on. The
//! frame at 10% alone is often wrong for lectures: black, a blank slide, or
//! halfway through a slide transition. Each candidate comes with the frame
//! half a second later; ffmpeg writes every candidate as a JPEG and prints
//! its luma statistics and how much each pair differs. After the
//! encode [`choose_thumbnail`] keeps a candidate that is neither black nor
//! blank and does not change over that half second, without decoding again.
//!
//! **Every output starts at the first frames.** ffmpeg 5.1 prints no
//! progress until every output of the process has written its first packet
//! (`print_report` waits for all headers). An output whose first frame came
//! at 10% of a two-hour lecture, or a sprite written only at the end, would
//! silence progress that long, and the stall watchdog would kill the
//! encode. So the tiles are written one by one from 0 s, and the candidates
//! output opens with frame 0, which is then thrown away.

use std::path::Path;

use crate::media::FrameRate;

pub const STORYBOARD_IMAGE: &str = "storyboard.jpg";
/// The encode writes each tile here, numbered from 1.
pub const TILE_PATTERN: &str = "storyboard-tile-%03d.jpg";
pub const STORYBOARD_VTT: &str = "storyboard.vtt";
/// Most tiles in a sprite: 10 × 10 at 160 px wide is about 1600 × 900.
pub const MAX_TILES: u32 = 100;
const TILE_WIDTH: u32 = 160;
const COLUMNS: u32 = 10;
/// Fewer seconds than this between tiles adds nothing a viewer can see.
const MIN_INTERVAL: u32 = 2;
/// Where default thumbnail candidates are, as fractions of the duration.
const CANDIDATES: [f64; 6] = [0.10, 0.15, 0.20, 0.30, 0.40, 0.50];
/// The second frame of a candidate's pair comes this much later.
const PAIR_GAP_SECONDS: f64 = 0.5;
/// Candidate JPEGs, numbered from 1 in the order ffmpeg writes them.
pub const CANDIDATE_PATTERN: &str = "thumbnail-candidate-%02d.jpg";
/// ffmpeg's `metadata` filter prints each candidate's statistics here.
pub const CANDIDATE_STATS: &str = "thumbnail-candidates.txt";
/// A picture whose brightest pixel is below this (8-bit, limited range,
/// where black is 16) is black.
const BLACK_MAX_LUMA: f64 = 48.0;
/// A picture whose luma spans less than this is blank: one colour.
const BLANK_LUMA_SPAN: f64 = 24.0;
/// A candidate whose mean absolute difference from the frame 0.5 s later
/// is above this (percent of full scale) is changing: a slide transition,
/// a fade, a camera pan. A fade measures about 16, moving test patterns
/// 2 to 4, a still slide 0. (Not ffmpeg's scene score: that one is built
/// to ignore fades.)
const STILL_DIFFERENCE: f64 = 1.0;

/// What the encode makes besides the ladder.
#[derive(Debug, Clone, PartialEq)]
pub struct Previews {
    pub storyboard: Storyboard,
    /// Frame numbers (after the plan's frame rate) of the candidates, each
    /// followed by its pair frame.
    pub thumbnail_frames: Vec<u64>,
    /// Frame 0 is selected first, and its JPEG and statistics skipped: it
    /// is not a candidate (see the module docs).
    pub opener: bool,
    /// The candidates' first frames' times, in seconds.
    pub thumbnail_times: Vec<f64>,
}

/// The storyboard's grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Storyboard {
    /// Seconds between tiles.
    pub interval: u32,
    pub tile_width: u32,
    pub tile_height: u32,
    pub columns: u32,
    pub rows: u32,
}

impl Previews {
    /// For a video of `duration` seconds at `fps` whose largest rendition is
    /// `width` × `height`; `thumbnail_time` as asked for at upload.
    pub fn new(duration: f64, fps: FrameRate, width: u32, height: u32, thumbnail_time: Option<f64>) -> Previews {
        let interval = ((duration / MAX_TILES as f64).ceil() as u32).max(MIN_INTERVAL);
        let count = ((duration / interval as f64).ceil() as u32).clamp(1, MAX_TILES);
        let columns = count.min(COLUMNS);
        let tile_height = ((TILE_WIDTH as f64 * height as f64 / width.max(1) as f64 / 2.0).round() as u32 * 2).max(2);
        let storyboard =
            Storyboard { interval, tile_width: TILE_WIDTH, tile_height, columns, rows: count.div_ceil(columns) };
        let rate = fps.as_f64();
        let last_frame = ((duration * rate).floor() as u64).saturating_sub(1);
        let times: Vec<f64> = match thumbnail_time {
            Some(t) => vec![t.clamp(0.0, duration)],
            None => CANDIDATES.iter().map(|f| duration * f).collect(),
        };
        let gap = ((PAIR_GAP_SECONDS * rate).round() as u64).max(1);
        let mut thumbnail_frames = Vec::new();
        let mut thumbnail_times = Vec::new();
        for t in times {
            let frame = ((t * rate).floor() as u64).min(last_frame);
            if thumbnail_frames.last().is_some_and(|&f| f >= frame) {
                continue;
            }
            thumbnail_frames.extend([frame, frame + gap]);
            thumbnail_times.push(frame as f64 / rate);
        }
        let opener = thumbnail_frames.first() != Some(&0);
        Previews { storyboard, thumbnail_frames, thumbnail_times, opener }
    }

    /// Every frame the candidates output takes, in order.
    pub fn selected_frames(&self) -> Vec<u64> {
        self.opener.then_some(0).into_iter().chain(self.thumbnail_frames.iter().copied()).collect()
    }
}

impl Storyboard {
    /// The WebVTT file naming each tile of the sprite, for a video of
    /// `duration` seconds (as published: it may be shorter than planned).
    pub fn vtt(&self, duration: f64) -> String {
        let count = ((duration / self.interval as f64).ceil() as u32).clamp(1, self.columns * self.rows);
        let mut out = String::from("WEBVTT\n");
        for i in 0..count {
            let start = (i * self.interval) as u64 * 1000;
            let end = (((i + 1) * self.interval) as f64).min(duration.max(0.001)) * 1000.0;
            let (x, y) = ((i % self.columns) * self.tile_width, (i / self.columns) * self.tile_height);
            out.push_str(&format!(
                "\n{} --> {}\n{STORYBOARD_IMAGE}#xywh={x},{y},{},{}\n",
                crate::captions::cues::timestamp(start),
                crate::captions::cues::timestamp(end.round() as u64),
                self.tile_width,
                self.tile_height
            ));
        }
        out
    }
}

/// One candidate frame's statistics, from the `metadata` filter's output.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct FrameStats {
    /// Mean absolute difference from the frame before it, in percent.
    change: f64,
    luma_min: f64,
    luma_max: f64,
}

impl FrameStats {
    fn defective(&self) -> bool {
        self.luma_max < BLACK_MAX_LUMA || self.luma_max - self.luma_min < BLANK_LUMA_SPAN
    }
}

/// Frames in the order printed.
fn read_stats(text: &str) -> Vec<FrameStats> {
    let mut frames = Vec::new();
    for line in text.lines() {
        if line.starts_with("frame:") {
            frames.push(FrameStats::default());
            continue;
        }
        let (Some(frame), Some((key, value))) = (frames.last_mut(), line.split_once('=')) else { continue };
        let value: f64 = value.trim().parse().unwrap_or(0.0);
        match key {
            "lavfi.scd.mafd" => frame.change = value,
            "lavfi.signalstats.YMIN" => frame.luma_min = value,
            "lavfi.signalstats.YMAX" => frame.luma_max = value,
            _ => {}
        }
    }
    frames
}

/// Which candidate to keep, by index: the first that is neither black nor
/// blank and still 0.5 s later; else the stillest good one; else the one
/// with the most contrast.
fn pick(frames: &[FrameStats], candidates: usize) -> Option<usize> {
    pick_among(&pairs(frames, candidates, 0))
}

/// `(candidate index, its frame's statistics, its change over the pair)`
/// of the first `candidates` pairs of `frames`, indexed from `first`.
fn pairs(frames: &[FrameStats], candidates: usize, first: usize) -> Vec<(usize, FrameStats, f64)> {
    (0..candidates)
        .filter_map(|i| {
            let frame = *frames.get(2 * i)?;
            // The pair frame's difference is from the candidate; a
            // candidate at the very end has no pair and counts as still.
            let change = frames.get(2 * i + 1).map_or(0.0, |f| f.change);
            Some((first + i, frame, change))
        })
        .collect()
}

fn pick_among(pairs: &[(usize, FrameStats, f64)]) -> Option<usize> {
    let good = || pairs.iter().filter(|(_, f, _)| !f.defective());
    good()
        .find(|(_, _, change)| *change <= STILL_DIFFERENCE)
        .or_else(|| good().min_by(|a, b| a.2.total_cmp(&b.2)))
        .or_else(|| pairs.iter().max_by(|a, b| (a.1.luma_max - a.1.luma_min).total_cmp(&(b.1.luma_max - b.1.luma_min))))
        .map(|(i, _, _)| *i)
}

/// After the encode: keeps the chosen candidate as `thumbnail` in
/// `out_dir`, removes the others and their statistics, and returns the
/// chosen frame's time. `None` when no candidate was written (a video
/// stream shorter than its container claims).
pub async fn choose_thumbnail(out_dir: &Path, previews: &Previews, thumbnail: &str) -> Option<f64> {
    let stats = tokio::fs::read_to_string(out_dir.join(CANDIDATE_STATS)).await.unwrap_or_default();
    let mut frames = read_stats(&stats);
    let skip = (previews.opener as usize).min(frames.len());
    let frames = frames.split_off(skip);
    // Written in selection order, numbered from 1: the opener first.
    let file = |n: usize| out_dir.join(CANDIDATE_PATTERN.replace("%02d", &format!("{:02}", n + 1)));
    let chosen =
        pick(&frames, previews.thumbnail_times.len()).filter(|&i| std::fs::metadata(file(skip + 2 * i)).is_ok());
    if let Some(i) = chosen {
        if tokio::fs::rename(file(skip + 2 * i), out_dir.join(thumbnail)).await.is_err() {
            return None;
        }
    }
    for n in 0..previews.selected_frames().len() {
        let _ = tokio::fs::remove_file(file(n)).await;
    }
    let _ = tokio::fs::remove_file(out_dir.join(CANDIDATE_STATS)).await;
    chosen.map(|i| previews.thumbnail_times[i])
}

/// The share of a chunked encode's previews that one chunk makes: the
/// thumbnail candidates whose first frame lies in the chunk, and the
/// storyboard tiles whose time does, in the chunk's own frame numbers and
/// times. The chunk writes them as the whole encode would (an opening frame
/// first, see the module docs); [`ChunkPreviews::assess`] turns its
/// statistics into [`Candidate`]s, and the joining job picks among every
/// chunk's with [`pick_candidate`] and tiles the sprite.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkPreviews {
    /// `(index among the whole video's candidates, chunk-local frame)`.
    pub candidates: Vec<(usize, u64)>,
    /// Frames from a candidate to its pair frame.
    pub pair_gap: u64,
    /// Where the chunk starts in the video, in whole seconds.
    pub start_seconds: u32,
    pub storyboard: Storyboard,
    /// Tiles of the whole storyboard.
    pub tiles: u32,
}

/// One thumbnail candidate as a chunk saw it, for the joining job.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Candidate {
    /// Index among the whole video's candidates.
    pub index: usize,
    pub change: f64,
    pub luma_min: f64,
    pub luma_max: f64,
}

impl Previews {
    /// This video's previews for the chunk from `start_seconds` (`length`
    /// seconds long, `None` to the end) at `fps`.
    pub fn for_chunk(&self, fps: FrameRate, start_seconds: u32, length: Option<u32>) -> ChunkPreviews {
        let rate = fps.as_f64();
        // The chunk's frame 0 is the first at or after its start.
        let frame_at = |seconds: u32| (seconds as f64 * rate - 1e-6).ceil().max(0.0) as u64;
        let first = frame_at(start_seconds);
        let end = length.map(|l| frame_at(start_seconds + l));
        let pair_gap = self.thumbnail_frames.get(1).zip(self.thumbnail_frames.first()).map_or(1, |(b, a)| b - a);
        let candidates = self
            .thumbnail_frames
            .chunks(2)
            .enumerate()
            // A pair across the chunk's end keeps its first frame here; its
            // second never comes (the chunk stops before it), and like a
            // candidate at the end of a video it counts as still.
            .filter(|(_, pair)| pair[0] >= first && end.is_none_or(|e| pair[0] < e))
            .map(|(i, pair)| (i, pair[0] - first))
            .collect();
        let board = self.storyboard;
        ChunkPreviews { candidates, pair_gap, start_seconds, storyboard: board, tiles: board.columns * board.rows }
    }
}

impl ChunkPreviews {
    /// Frame 0 opens the candidates' output unless it is a candidate.
    pub fn opener(&self) -> bool {
        self.candidates.first().is_none_or(|&(_, frame)| frame != 0)
    }

    /// Every frame the candidates output takes, in order.
    pub fn selected_frames(&self) -> Vec<u64> {
        let pairs = self.candidates.iter().flat_map(|&(_, f)| [f, f + self.pair_gap]);
        self.opener().then_some(0).into_iter().chain(pairs).collect()
    }

    /// The `select` expression of the tiles: the chunk's first frame (which
    /// opens the output), then the first frame in each later interval of
    /// the whole video's tile grid.
    pub fn tile_select(&self) -> String {
        let (start, interval) = (self.start_seconds, self.storyboard.interval);
        format!(
            "isnan(prev_selected_t)+gte(floor((t+{start})/{interval})-floor((prev_selected_t+{start})/{interval})\\,1)"
        )
    }

    /// The whole storyboard's tile number (from 0) of each tile file the
    /// chunk writes (numbered from 1): the opening frame is a tile only
    /// when the chunk starts on the grid.
    pub fn tile_number(&self, file: u32) -> Option<u32> {
        let interval = self.storyboard.interval;
        let on_grid = self.start_seconds.is_multiple_of(interval);
        let first = self.start_seconds.div_ceil(interval);
        let n = if on_grid { first + file - 1 } else { (first + file).checked_sub(2)? };
        (file >= 1 && (on_grid || file >= 2) && n < self.tiles).then_some(n)
    }

    /// Each candidate's statistics from what the chunk's ffmpeg printed.
    pub fn assess(&self, stats: &str) -> Vec<Candidate> {
        let mut frames = read_stats(stats);
        let frames = frames.split_off((self.opener() as usize).min(frames.len()));
        pairs(&frames, self.candidates.len(), 0)
            .into_iter()
            .map(|(i, f, change)| Candidate {
                index: self.candidates[i].0,
                change,
                luma_min: f.luma_min,
                luma_max: f.luma_max,
            })
            .collect()
    }

    /// The candidate file (numbered from 1, in the order written) of this
    /// chunk's `n`th candidate.
    pub fn candidate_file(&self, n: usize) -> u32 {
        (self.opener() as usize + 2 * n + 1) as u32
    }
}

/// The thumbnail among every chunk's candidates, by the same rule as one
/// encode's (`pick`): its index among the whole video's candidates.
pub fn pick_candidate(candidates: &[Candidate]) -> Option<usize> {
    let mut sorted = candidates.to_vec();
    sorted.sort_by_key(|c| c.index);
    let pairs: Vec<(usize, FrameStats, f64)> = sorted
        .iter()
        .map(|c| (c.index, FrameStats { change: 0.0, luma_min: c.luma_min, luma_max: c.luma_max }, c.change))
        .collect();
    pick_among(&pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FPS: FrameRate = FrameRate { num: 30, den: 1 };

    #[test]
    fn the_storyboard_stays_bounded_and_names_every_tile() {
        let short = Previews::new(30.0, FPS, 1280, 720, None).storyboard;
        assert_eq!((short.interval, short.columns, short.rows, short.tile_height), (2, 10, 2, 90));
        let long = Previews::new(2.0 * 3600.0, FPS, 1280, 720, None).storyboard;
        assert_eq!(long.interval, 72);
        assert!(long.columns * long.rows <= MAX_TILES);
        let portrait = Previews::new(5.0, FPS, 720, 1280, None).storyboard;
        assert_eq!((portrait.columns, portrait.rows, portrait.tile_height), (3, 1, 284));
        let vtt = short.vtt(29.5);
        assert_eq!(vtt.matches("#xywh=").count(), 15);
        assert!(vtt.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:02.000\nstoryboard.jpg#xywh=0,0,160,90\n"), "{vtt}");
        assert!(vtt.contains("00:00:20.000 --> 00:00:22.000\nstoryboard.jpg#xywh=0,90,160,90\n"), "{vtt}");
        assert!(vtt.ends_with("00:00:28.000 --> 00:00:29.500\nstoryboard.jpg#xywh=640,90,160,90\n"), "{vtt}");
    }

    #[test]
    fn candidates_come_in_pairs_and_a_requested_time_is_the_only_one() {
        let default = Previews::new(100.0, FPS, 1280, 720, None);
        assert_eq!(default.thumbnail_frames[..4], [300, 315, 450, 465]);
        assert_eq!(default.selected_frames()[..3], [0, 300, 315], "frame 0 opens the output");
        assert_eq!(default.thumbnail_times, [10.0, 15.0, 20.0, 30.0, 40.0, 50.0]);
        let asked = Previews::new(100.0, FPS, 1280, 720, Some(42.5));
        assert_eq!((asked.thumbnail_frames, asked.thumbnail_times), (vec![1275, 1290], vec![42.5]));
        let past_end = Previews::new(10.0, FPS, 1280, 720, Some(99.0));
        assert_eq!(past_end.thumbnail_frames[0], 299);
        let first = Previews::new(10.0, FPS, 1280, 720, Some(0.0));
        assert_eq!((first.opener, first.selected_frames()), (false, vec![0, 15]), "frame 0 is a candidate then");
    }

    fn stats(change: f64, min: f64, max: f64) -> String {
        format!("frame:0 pts:1 pts_time:1\nlavfi.scd.mafd={change}\nlavfi.scd.score=0\nlavfi.signalstats.YMIN={min}\nlavfi.signalstats.YMAX={max}\n")
    }

    #[test]
    fn black_blank_and_changing_candidates_are_passed_over() {
        let black = stats(0.0, 16.0, 30.0) + &stats(0.0, 16.0, 30.0);
        let blank = stats(30.0, 200.0, 222.0) + &stats(0.0, 200.0, 222.0);
        let fading = stats(40.0, 16.0, 235.0) + &stats(15.6, 16.0, 235.0);
        let slide = stats(30.0, 16.0, 235.0) + &stats(0.01, 16.0, 235.0);
        let frames = read_stats(&(black.clone() + &blank + &fading + &slide));
        assert_eq!(frames.len(), 8);
        assert_eq!(pick(&frames, 4), Some(3), "the still slide");
        let frames = read_stats(&(black.clone() + &fading + &blank));
        assert_eq!(pick(&frames, 3), Some(1), "no still one: the good one that changes least");
        let frames = read_stats(&(black + &blank));
        assert_eq!(pick(&frames, 2), Some(1), "all defective: the most contrast");
        assert_eq!(pick(&[], 2), None);
    }

    #[test]
    fn a_chunk_takes_the_candidates_and_tiles_that_fall_in_it() {
        let whole = Previews::new(120.0, FPS, 1280, 720, None);
        assert_eq!(whole.storyboard.interval, 2);
        // 12 s chunks: the candidate at 12 s (frame 360) opens chunk 1.
        let second = whole.for_chunk(FPS, 12, Some(12));
        assert_eq!(second.candidates, vec![(0, 0), (1, 180)], "12 s and 18 s, from the chunk's start");
        assert!(!second.opener(), "its frame 0 is a candidate");
        assert_eq!(second.selected_frames(), vec![0, 15, 180, 195]);
        assert_eq!((second.candidate_file(0), second.candidate_file(1)), (1, 3));
        assert_eq!(second.tile_number(1), Some(6), "on the grid: the opening frame is tile 6 (12 s)");
        let last = whole.for_chunk(FPS, 108, None);
        assert!(last.candidates.is_empty() && last.opener());
        assert_eq!(last.tile_number(6), Some(60 - 1), "the 60th and last tile");
        assert_eq!(last.tile_number(7), None, "a tile past the storyboard");
        // A pair across the boundary belongs to the chunk of its first
        // frame, which never sees the second: still, by the end-of-video rule.
        let straddled = Previews::new(100.0, FPS, 1280, 720, Some(11.9));
        let before = straddled.for_chunk(FPS, 0, Some(12));
        assert_eq!(before.candidates, vec![(0, 357)]);
        assert!(straddled.for_chunk(FPS, 12, Some(12)).candidates.is_empty());
        let only_first = stats(0.0, 16.0, 235.0) + &stats(0.0, 20.0, 200.0); // the opener, then the candidate
        assert_eq!(
            before.assess(&only_first),
            vec![Candidate { index: 0, change: 0.0, luma_min: 20.0, luma_max: 200.0 }]
        );
        // Off the grid (7 s tiles, 12 s chunks): the opening frame is not a tile.
        let long = Previews::new(700.0, FPS, 1280, 720, None);
        assert_eq!(long.storyboard.interval, 7);
        let off = long.for_chunk(FPS, 12, Some(12));
        assert_eq!((off.tile_number(1), off.tile_number(2), off.tile_number(3)), (None, Some(2), Some(3)));
        assert!(off.tile_select().contains("floor((t+12)/7)"), "{}", off.tile_select());
    }

    #[test]
    fn the_thumbnail_among_chunks_follows_the_one_encode_rule() {
        let c = |index, change, min, max| Candidate { index, change, luma_min: min, luma_max: max };
        let chosen = pick_candidate(&[c(3, 0.0, 16.0, 235.0), c(0, 0.0, 16.0, 30.0), c(1, 9.0, 16.0, 235.0)]);
        assert_eq!(chosen, Some(3), "black 0 and changing 1 passed over, whatever the order they came in");
        let stats =
            stats(0.0, 20.0, 200.0) + &stats(0.2, 20.0, 200.0) + &stats(0.0, 16.0, 20.0) + &stats(0.0, 16.0, 20.0);
        let chunk = Previews::new(120.0, FPS, 1280, 720, None).for_chunk(FPS, 12, Some(12));
        let assessed = chunk.assess(&stats);
        assert_eq!(assessed, vec![c(0, 0.2, 20.0, 200.0), c(1, 0.0, 16.0, 20.0)]);
    }
}
