//! The ffmpeg and ffprobe binaries: which ones, checked once at start-up
//! (`Tools::check`), and how every one of them is started (`tool_command`:
//! with a cleared environment). `ingest` (ffprobe) and `transcode` (ffmpeg)
//! both use this; it uses neither, nor `config`.

use std::path::{Path, PathBuf};

use tokio::process::Command;

/// The ffmpeg binaries: checked by [`Tools::check`] wherever ffmpeg runs.
#[derive(Debug, Clone)]
pub struct Tools {
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
}

/// Why the binaries cannot be used, naming the one and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ToolError(pub String);

/// What vidpipe asks of ffmpeg: the encoders, filters and muxer that
/// `transcode::command` uses. Checked at start-up, so a wrong binary (or a
/// build without libx264) is named then, not on the first upload.
const NEEDED_ENCODERS: [&str; 3] = ["libx264", "aac", "mjpeg"];
const NEEDED_FILTERS: [&str; 7] = ["scale", "setsar", "format", "split", "trim", "zscale", "tonemap"];
const NEEDED_MUXERS: [&str; 3] = ["hls", "mp4", "image2"];
const NEEDED_BITSTREAM_FILTERS: [&str; 1] = ["aac_adtstoasc"];

impl Tools {
    /// Checks that the two binaries run, are ffmpeg and ffprobe, and that
    /// ffmpeg has everything the transcode uses. Each error names the
    /// binary, what is wrong with it and the variable that points at it.
    pub fn check(ffmpeg: &Path, ffprobe: &Path) -> Result<Tools, ToolError> {
        let ffmpeg_version = tool_version(ffmpeg, "ffmpeg", "VIDPIPE_FFMPEG")?;
        tool_version(ffprobe, "ffprobe", "VIDPIPE_FFPROBE")?;
        for (what, flag, needed) in [
            ("encoder", "-encoders", &NEEDED_ENCODERS[..]),
            ("filter", "-filters", &NEEDED_FILTERS[..]),
            ("muxer", "-muxers", &NEEDED_MUXERS[..]),
            ("bitstream filter", "-bsfs", &NEEDED_BITSTREAM_FILTERS[..]),
        ] {
            let listed = run_tool(ffmpeg, flag).unwrap_or_default();
            let missing: Vec<&str> = needed.iter().copied().filter(|name| !lists(&listed, name)).collect();
            if !missing.is_empty() {
                return Err(ToolError(format!(
                    "`{}` ({ffmpeg_version}) lacks the {what}(s) {}: install a full ffmpeg build (Debian/Ubuntu: `apt-get install -y ffmpeg`) or point VIDPIPE_FFMPEG at one",
                    ffmpeg.display(),
                    missing.join(", ")
                )));
            }
        }
        Ok(Tools { ffmpeg: ffmpeg.to_path_buf(), ffprobe: ffprobe.to_path_buf() })
    }
}

/// The binary's stdout for `flag`, when it ran and succeeded. The child sees
/// only PATH, like every ffmpeg vidpipe starts.
fn run_tool(path: &Path, flag: &str) -> Option<String> {
    let out = std::process::Command::new(path)
        .env_clear()
        .envs(std::env::var_os("PATH").map(|p| ("PATH", p)))
        .args(["-hide_banner", flag])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ffmpeg version 5.1.8-0+deb12u1` from `-version`, or an error that says
/// the binary did not run, or is not `name`.
fn tool_version(path: &Path, name: &str, var: &str) -> Result<String, ToolError> {
    let Some(out) = run_tool(path, "-version") else {
        return Err(ToolError(format!(
            "`{}` could not be run. Install ffmpeg (Debian/Ubuntu: `apt-get install -y ffmpeg`, macOS: `brew install ffmpeg`) or point {var} at the binary",
            path.display()
        )));
    };
    let first = out.lines().next().unwrap_or_default().trim();
    let version = first.split(' ').take(3).collect::<Vec<_>>().join(" ");
    if !first.starts_with(&format!("{name} version ")) {
        let shown: String = first.chars().take(60).collect();
        return Err(ToolError(format!(
            "`{}` is not {name}: `{} -version` printed `{shown}`, not `{name} version ...`. Point {var} at {name}",
            path.display(),
            path.display()
        )));
    }
    Ok(version)
}

/// Whether an `-encoders`/`-filters`/`-muxers` listing has `name` (each
/// entry a line of flags, the name, a description), or a `-bsfs` listing
/// (one name per line).
fn lists(listing: &str, name: &str) -> bool {
    listing.lines().any(|line| {
        let mut words = line.split_whitespace();
        let (first, second) = (words.next(), words.next());
        second == Some(name) || (first == Some(name) && second.is_none())
    })
}

/// Variables ffmpeg and ffprobe keep. They parse hostile files, so they get
/// nothing else of our environment: no cloud credentials, no DATABASE_URL.
const TOOL_ENV: &[&str] = &["PATH"];

/// A command for ffmpeg or ffprobe with a cleared environment (see [`TOOL_ENV`]).
pub fn tool_command(program: &Path) -> Command {
    let mut command = Command::new(program);
    command.env_clear().env("LC_ALL", "C");
    for name in TOOL_ENV {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command
}
