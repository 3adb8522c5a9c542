//! Running one ffmpeg process under supervision.
//!
//! ffmpeg runs in its own process group, and every way out of [`run`] kills
//! the whole group: the job timeout, the stall watchdog (output time has not
//! advanced), cancellation (job deleted or cancelled, shutdown) and dropping
//! the future. Orphaned ffmpeg processes that outlive their job are a known
//! failure of comparable systems; this module is where that ends.

use crate::tools::tool_command;
use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Limits on one ffmpeg run.
#[derive(Debug, Clone, Copy)]
pub struct Watchdog {
    /// Wall-clock limit for the whole run.
    pub timeout: Duration,
    /// Limit on time without progress (output time not advancing).
    pub stall: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum FfmpegError {
    #[error("could not start ffmpeg: {0}")]
    Spawn(std::io::Error),
    #[error("ffmpeg failed ({status}): {stderr}")]
    Failed {
        status: String,
        /// The exit code; `None` when a signal killed it.
        code: Option<i32>,
        stderr: String,
    },
    #[error("ffmpeg stalled: no progress for {0:?}, killed by the stall watchdog")]
    Stalled(Duration),
    #[error("ffmpeg ran longer than the job timeout of {0:?} and was killed")]
    TimedOut(Duration),
    #[error("cancelled")]
    Cancelled,
}

/// ffmpeg's exit code when more frames failed to decode than `-max_error_rate` allows.
pub const EXIT_TOO_MANY_DECODE_ERRORS: i32 = 69;

/// What ffmpeg writes when the fault is ours (the machine), not the input's.
const SYSTEM_FAULTS: &[&str] = &[
    "No space left on device",
    "Input/output error",
    "Too many open files",
    "Resource temporarily unavailable",
    "Disk quota exceeded",
    "Read-only file system",
];

impl FfmpegError {
    /// True when the input is to blame, so running it again on the same bytes
    /// would fail the same way: ffmpeg refused or could not decode it, or it
    /// stalled or ran out of time on it. A killed process, a full disk and
    /// the like are the machine's faults, and worth another attempt.
    pub fn caused_by_input(&self) -> bool {
        match self {
            FfmpegError::Stalled(_) | FfmpegError::TimedOut(_) => true,
            FfmpegError::Failed { code: Some(EXIT_TOO_MANY_DECODE_ERRORS), .. } => true,
            FfmpegError::Failed { code: None, .. } => false,
            FfmpegError::Failed { stderr, .. } => !SYSTEM_FAULTS.iter().any(|fault| stderr.contains(fault)),
            FfmpegError::Spawn(_) | FfmpegError::Cancelled => false,
        }
    }
}

/// Counts this ffmpeg in `vidpipe_ffmpeg_running` for as long as it lives.
struct RunningGauge;

impl RunningGauge {
    fn new() -> RunningGauge {
        crate::metrics::ffmpeg_started();
        RunningGauge
    }
}

impl Drop for RunningGauge {
    fn drop(&mut self) {
        crate::metrics::ffmpeg_ended();
    }
}

/// Kills the process group when dropped, unless the process already exited.
struct GroupGuard {
    pgid: Option<i32>,
}

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // SAFETY: killpg only sends a signal; the group id is that of a
            // child we spawned as a group leader and have not reaped yet.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `ffmpeg args...`, reporting the output time (seconds) it has reached
/// on `progress`. The args must contain `-progress pipe:1`.
pub async fn run(
    ffmpeg: &Path,
    args: &[OsString],
    watchdog: Watchdog,
    cancel: &CancellationToken,
    progress: &watch::Sender<f64>,
) -> Result<(), FfmpegError> {
    let mut command = tool_command(ffmpeg);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // If vidpipe itself dies (kill -9, OOM), no drop or signal handler runs:
    // the kernel kills ffmpeg instead of leaving an orphan encoding for nobody.
    // Linux only; elsewhere (macOS) such an orphan runs until ffmpeg ends.
    // SAFETY: prctl is async-signal-safe and touches only the child.
    #[cfg(target_os = "linux")]
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(FfmpegError::Spawn)?;
    let mut guard = GroupGuard { pgid: child.id().map(|id| id as i32) };
    let _running = RunningGauge::new();
    let stderr_tail = tokio::spawn(tail(child.stderr.take().expect("stderr is piped")));
    let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();

    let started = Instant::now();
    let deadline = started + watchdog.timeout;
    let mut last_advance = started;
    let mut reached = -1.0f64;
    let mut stdout_open = true;
    let outcome = loop {
        let stall_at = last_advance + watchdog.stall;
        tokio::select! {
            line = lines.next_line(), if stdout_open => match line {
                Ok(Some(line)) => {
                    if let Some(seconds) = parse_out_time(&line) {
                        if seconds > reached {
                            reached = seconds;
                            last_advance = Instant::now();
                            progress.send_replace(seconds);
                        }
                    }
                }
                _ => stdout_open = false,
            },
            status = child.wait(), if !stdout_open => break status.map_err(FfmpegError::Spawn),
            _ = tokio::time::sleep_until(deadline.min(stall_at)) => {
                break Err(if Instant::now() >= deadline {
                    FfmpegError::TimedOut(watchdog.timeout)
                } else {
                    FfmpegError::Stalled(watchdog.stall)
                });
            }
            _ = cancel.cancelled() => break Err(FfmpegError::Cancelled),
        }
    };
    match outcome {
        Ok(status) if status.success() => {
            guard.pgid = None;
            Ok(())
        }
        Ok(status) => {
            guard.pgid = None;
            let stderr = stderr_tail.await.unwrap_or_default();
            Err(FfmpegError::Failed { status: status.to_string(), code: status.code(), stderr })
        }
        Err(e) => {
            guard.kill();
            let _ = child.wait().await;
            Err(e)
        }
    }
}

/// The last lines ffmpeg wrote to stderr: the reason it failed.
async fn tail(stream: impl AsyncRead + Unpin) -> String {
    const KEEP: usize = 8;
    let mut lines = BufReader::new(stream).lines();
    let mut kept = std::collections::VecDeque::with_capacity(KEEP);
    while let Ok(Some(line)) = lines.next_line().await {
        if kept.len() == KEEP {
            kept.pop_front();
        }
        kept.push_back(line);
    }
    let joined: Vec<String> = kept.into_iter().collect();
    joined.join(" | ")
}

/// `out_time_us=12345678` (ffmpeg also prints `out_time_ms`, which is in
/// microseconds too, and `N/A` before the first frame).
fn parse_out_time(line: &str) -> Option<f64> {
    let value = line.strip_prefix("out_time_us=").or_else(|| line.strip_prefix("out_time_ms="))?;
    let micros: i64 = value.trim().parse().ok()?;
    (micros >= 0).then(|| micros as f64 / 1_000_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_of_the_input_are_final() {
        let failed =
            |code: Option<i32>, stderr: &str| FfmpegError::Failed { status: "x".into(), code, stderr: stderr.into() };
        assert!(failed(Some(EXIT_TOO_MANY_DECODE_ERRORS), "").caused_by_input());
        assert!(failed(Some(1), "Invalid data found when processing input").caused_by_input());
        assert!(FfmpegError::Stalled(Duration::from_secs(1)).caused_by_input());
        assert!(FfmpegError::TimedOut(Duration::from_secs(1)).caused_by_input());
        assert!(!failed(None, "").caused_by_input(), "killed by a signal (OOM killer, operator)");
        assert!(!failed(Some(1), "seg_00003.m4s: No space left on device").caused_by_input());
        assert!(!FfmpegError::Spawn(std::io::Error::other("x")).caused_by_input());
    }

    #[test]
    fn progress_lines_parse() {
        assert_eq!(parse_out_time("out_time_us=2500000"), Some(2.5));
        assert_eq!(parse_out_time("out_time_ms=1000000"), Some(1.0));
        assert_eq!(parse_out_time("out_time_us=N/A"), None);
        assert_eq!(parse_out_time("speed=  1.2x"), None);
    }

    #[tokio::test]
    async fn a_silent_process_is_killed_by_the_stall_watchdog() {
        // `sh -c 'sleep 30'` never prints progress: it stands for a hung ffmpeg.
        let args: Vec<OsString> = vec!["-c".into(), "sleep 30".into()];
        let (tx, _rx) = watch::channel(0.0);
        let started = std::time::Instant::now();
        let err = run(
            Path::new("sh"),
            &args,
            Watchdog { timeout: Duration::from_secs(60), stall: Duration::from_millis(300) },
            &CancellationToken::new(),
            &tx,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, FfmpegError::Stalled(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    // Reads /proc to tell a zombie from a running process.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn cancellation_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild.pid");
        // The shell starts a grandchild; killing only the shell would orphan it.
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let args: Vec<OsString> = vec!["-c".into(), script.into()];
        let (tx, _rx) = watch::channel(0.0);
        let cancel = CancellationToken::new();
        let canceller = cancel.clone();
        let pidfile2 = pidfile.clone();
        tokio::spawn(async move {
            while !pidfile2.exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            canceller.cancel();
        });
        let err = run(
            Path::new("sh"),
            &args,
            Watchdog { timeout: Duration::from_secs(60), stall: Duration::from_secs(60) },
            &cancel,
            &tx,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, FfmpegError::Cancelled));
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        // A killed process may linger as a zombie until something reaps it;
        // a zombie runs nothing, so it counts as gone.
        let alive = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|stat| stat.rsplit(") ").next().is_some_and(|rest| !rest.starts_with('Z')))
                .unwrap_or(false)
        };
        while alive(pid) {
            assert!(std::time::Instant::now() < deadline, "grandchild {pid} survived cancellation");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
