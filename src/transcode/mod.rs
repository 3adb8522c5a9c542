//! Probe → plan → encode → package: turning one source file into an HLS ladder
//! in a directory.
//!
//! This module knows nothing of queues, lectures or storage; the worker and
//! the `vidpipe transcode` command both drive it. Layout of an output dir:
//! `thumbnail.jpg`, `<rendition>/index.m3u8`, `<rendition>/init_N.mp4`
//! (`init.mp4` for a one-rendition ladder), `<rendition>/seg_NNNNN.m4s`
//! (fragmented MP4), and
//! (after [`write_master_and_vod`]) `master.m3u8`.

pub mod command;
pub mod ffmpeg;
pub mod plan;
pub mod playlist;

use std::path::Path;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::media::MediaInfo;
use crate::tools::Tools;
use ffmpeg::{FfmpegError, Watchdog};
use plan::Plan;

/// Runs ffmpeg for one source.
#[derive(Debug, Clone)]
pub struct Transcoder {
    pub tools: Tools,
    pub watchdog: Watchdog,
}

impl Transcoder {
    /// Encodes every rendition and the thumbnail in one ffmpeg process,
    /// reporting progress as a percentage on `progress`.
    pub async fn encode(
        &self,
        media: &MediaInfo,
        plan: &Plan,
        input: &Path,
        out_dir: &Path,
        cancel: &CancellationToken,
        progress: &watch::Sender<f64>,
    ) -> Result<(), FfmpegError> {
        for r in &plan.renditions {
            tokio::fs::create_dir_all(out_dir.join(r.name())).await.map_err(FfmpegError::Spawn)?;
        }
        let args = command::ladder_args(media, plan, input, out_dir);
        let (seconds_tx, mut seconds_rx) = watch::channel(0.0);
        let duration = plan.duration_seconds.max(0.001);
        let run = ffmpeg::run(&self.tools.ffmpeg, &args, self.watchdog, cancel, &seconds_tx);
        tokio::pin!(run);
        loop {
            tokio::select! {
                result = &mut run => return result,
                Ok(()) = seconds_rx.changed() => {
                    // 100 is for "published", not "encoded".
                    let pct = (*seconds_rx.borrow() / duration * 100.0).clamp(0.0, 99.0);
                    progress.send_replace(pct);
                }
            }
        }
    }
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
