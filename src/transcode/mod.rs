//! Probe → plan → encode → package: turning one source file into an HLS ladder
//! (with its thumbnail and seek previews) in a directory.
//!
//! This module knows nothing of queues, lectures or storage; the worker and
//! the `vidpipe transcode` command both drive it. Layout of an output dir:
//! `thumbnail.jpg`, `storyboard.jpg` and `storyboard.vtt`, `<rendition>/index.m3u8`, `<rendition>/init_N.mp4`
//! (`init.mp4` for a one-rendition ladder), `<rendition>/seg_NNNNN.m4s`
//! (fragmented MP4), and
//! (after [`write_master_and_vod`]) `master.m3u8`.

pub mod chunks;
pub mod command;
pub mod ffmpeg;
pub mod plan;
pub mod playlist;
pub mod previews;

use std::path::Path;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::media::{MediaInfo, SubtitleStream};
use crate::tools::Tools;
use ffmpeg::{FfmpegError, Watchdog};
use plan::Plan;

/// What an encode made besides the ladder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Encoded {
    /// The time of the frame kept as `thumbnail.jpg`, if one was.
    pub thumbnail_time: Option<f64>,
    /// `storyboard.jpg` and `storyboard.vtt` were written.
    pub has_storyboard: bool,
}

/// Runs ffmpeg for one source.
#[derive(Debug, Clone)]
pub struct Transcoder {
    pub tools: Tools,
    pub watchdog: Watchdog,
    /// Threads per stage of an encode (`VIDPIPE_ENCODER_THREADS`; see
    /// [`command::with_threads`]); `None`: ffmpeg's choice.
    pub threads: Option<u16>,
}

impl Transcoder {
    /// Encodes every rendition, the thumbnail candidates and the storyboard
    /// in one ffmpeg process, reporting progress as a percentage on
    /// `progress`; then keeps the best candidate as the thumbnail and
    /// writes the storyboard's WebVTT.
    pub async fn encode(
        &self,
        media: &MediaInfo,
        plan: &Plan,
        input: &Path,
        out_dir: &Path,
        cancel: &CancellationToken,
        progress: &watch::Sender<f64>,
    ) -> Result<Encoded, FfmpegError> {
        for r in &plan.renditions {
            tokio::fs::create_dir_all(out_dir.join(r.name())).await.map_err(FfmpegError::Spawn)?;
        }
        let args = command::with_threads(command::ladder_args(media, plan, input, out_dir), self.threads);
        self.run_reporting(&args, plan.duration_seconds.max(0.001), cancel, progress).await?;
        Ok(self.finish_previews(plan, out_dir, cancel).await)
    }
}

impl Transcoder {
    /// Encodes one chunk of a chunked lecture into `out_dir` (see
    /// [`command::chunk_args`]), reporting progress through the chunk.
    /// Returns its share of the previews: what it wrote of them is in
    /// `out_dir` (candidates, their statistics, tiles).
    #[allow(clippy::too_many_arguments)]
    pub async fn encode_chunk(
        &self,
        media: &MediaInfo,
        plan: &Plan,
        range: &chunks::ChunkRange,
        input: &Path,
        out_dir: &Path,
        cancel: &CancellationToken,
        progress: &watch::Sender<f64>,
    ) -> Result<previews::ChunkPreviews, FfmpegError> {
        for r in &plan.renditions {
            tokio::fs::create_dir_all(out_dir.join(r.name())).await.map_err(FfmpegError::Spawn)?;
        }
        let length = range.length_seconds().unwrap_or(plan.duration_seconds - range.start_seconds()).max(0.001);
        let share = plan.previews.for_chunk(plan.fps, range.start_whole_seconds(), range.length_whole_seconds());
        let args = command::with_threads(command::chunk_args(media, plan, input, out_dir, range, &share), self.threads);
        self.run_reporting(&args, length, cancel, progress).await?;
        Ok(share)
    }

    /// Tiles the storyboard's tiles in `dir` (named as the encode names
    /// them) into its sprite; `true` if it was written.
    pub async fn tile_sprite(&self, board: &previews::Storyboard, dir: &Path, cancel: &CancellationToken) -> bool {
        let args = command::sprite_args(board, dir);
        let (seconds, _) = watch::channel(0.0);
        match ffmpeg::run(&self.tools.ffmpeg, &args, self.watchdog, cancel, &seconds).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "could not tile the storyboard; the lecture goes without");
                false
            }
        }
    }

    /// Encodes the whole source's sound into `out_dir/audio/` (see
    /// [`command::audio_args`]).
    pub async fn encode_audio(
        &self,
        media: &MediaInfo,
        plan: &Plan,
        input: &Path,
        out_dir: &Path,
        cancel: &CancellationToken,
        progress: &watch::Sender<f64>,
    ) -> Result<(), FfmpegError> {
        tokio::fs::create_dir_all(out_dir.join(command::AUDIO_DIR)).await.map_err(FfmpegError::Spawn)?;
        let args = command::audio_args(media, plan, input, out_dir);
        self.run_reporting(&args, plan.duration_seconds.max(0.001), cancel, progress).await
    }

    /// Runs ffmpeg with `args`, turning its position into a percentage of
    /// `seconds` on `progress` (99 at most: 100 is for "published").
    async fn run_reporting(
        &self,
        args: &[std::ffi::OsString],
        seconds: f64,
        cancel: &CancellationToken,
        progress: &watch::Sender<f64>,
    ) -> Result<(), FfmpegError> {
        let (seconds_tx, mut seconds_rx) = watch::channel(0.0);
        let run = ffmpeg::run(&self.tools.ffmpeg, args, self.watchdog, cancel, &seconds_tx);
        tokio::pin!(run);
        loop {
            tokio::select! {
                result = &mut run => return result,
                Ok(()) = seconds_rx.changed() => {
                    let pct = (*seconds_rx.borrow() / seconds * 100.0).clamp(0.0, 99.0);
                    progress.send_replace(pct);
                }
            }
        }
    }
}

impl Transcoder {
    /// Converts the source's text subtitle streams to WebVTT files in
    /// `out_dir`: one per stream that converted, with its stream. A stream
    /// that fails leaves no file; the video does not depend on them.
    pub async fn extract_subtitles(
        &self,
        media: &MediaInfo,
        input: &Path,
        out_dir: &Path,
        cancel: &CancellationToken,
    ) -> Result<Vec<(SubtitleStream, std::path::PathBuf)>, FfmpegError> {
        if media.subtitles.is_empty() {
            return Ok(Vec::new());
        }
        tokio::fs::create_dir_all(out_dir).await.map_err(FfmpegError::Spawn)?;
        let args = command::subtitle_args(media, input, out_dir);
        let (seconds, _) = watch::channel(0.0);
        ffmpeg::run(&self.tools.ffmpeg, &args, self.watchdog, cancel, &seconds).await?;
        let mut found = Vec::new();
        for stream in &media.subtitles {
            let path = command::subtitle_file(out_dir, stream.index);
            if tokio::fs::try_exists(&path).await.unwrap_or(false) {
                found.push((stream.clone(), path));
            }
        }
        Ok(found)
    }
}

impl Transcoder {
    /// The thumbnail chosen from the candidates; the storyboard's tiles made
    /// one sprite and its WebVTT written for the duration actually encoded.
    /// A storyboard that fails is left out: the video does not need it.
    async fn finish_previews(&self, plan: &Plan, out_dir: &Path, cancel: &CancellationToken) -> Encoded {
        let thumbnail_time = previews::choose_thumbnail(out_dir, &plan.previews, command::THUMBNAIL).await;
        let board = &plan.previews.storyboard;
        let tile = |n: u32| out_dir.join(previews::TILE_PATTERN.replace("%03d", &format!("{n:03}")));
        let mut has_storyboard = false;
        if tokio::fs::try_exists(tile(1)).await.unwrap_or(false) && self.tile_sprite(board, out_dir, cancel).await {
            has_storyboard = write_storyboard_vtt(plan, out_dir).await;
        }
        // A stream longer than probed can make one tile more than planned.
        for n in 1..=board.columns * board.rows + 1 {
            let _ = tokio::fs::remove_file(tile(n)).await;
        }
        Encoded { thumbnail_time, has_storyboard }
    }
}

/// The storyboard's WebVTT, for the duration the renditions really have.
async fn write_storyboard_vtt(plan: &Plan, out_dir: &Path) -> bool {
    let mut duration = 0.0;
    if let Some(r) = plan.renditions.first() {
        let text = tokio::fs::read_to_string(out_dir.join(r.name()).join(command::MEDIA_PLAYLIST)).await;
        duration = playlist::segment_durations(&text.unwrap_or_default()).iter().sum();
    }
    let vtt = plan.previews.storyboard.vtt(duration);
    tokio::fs::write(out_dir.join(previews::STORYBOARD_VTT), vtt).await.is_ok()
}

/// Finishes an output directory in place (for `vidpipe transcode`): media
/// playlists become VOD and the master playlist is written.
pub async fn write_master_and_vod(plan: &Plan, out_dir: &Path) -> std::io::Result<()> {
    for r in &plan.renditions {
        let path = out_dir.join(r.name()).join(command::MEDIA_PLAYLIST);
        let text = tokio::fs::read_to_string(&path).await?;
        tokio::fs::write(&path, playlist::to_vod(&text)).await?;
    }
    tokio::fs::write(out_dir.join(command::MASTER_PLAYLIST), playlist::master(plan)).await
}
