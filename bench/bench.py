#!/usr/bin/env python3
"""vidpipe benchmark harness (GitHub issue 5). Python 3.11, standard library only.

Run it through bench/run.sh. Every figure is a ratio against a baseline measured
in the same run, on the same input; timed figures are medians over --runs runs,
and the ratios of figures 1-3 are medians of per-run (paired) ratios.

Inputs are made with ffmpeg lavfi and cached in bench/.cache/:
  clip   1080p30 testsrc2 + temporal noise + a sine tone, H.264 (ultrafast, CRF 20,
         about 18 Mbit/s) + AAC; 60 s (6 s in quick mode)
  long   the clip looped by stream copy to 10 minutes (60 s in quick mode)
  big    MPEG-TS: a ~20 MB TS cut of the clip concatenated with `cat` to 2 GiB
         (200 MiB in quick mode); built in the run's temp dir, deleted after

What is measured:
  1. End to end vs the limit: 202 of POST /api/upload -> lecture `completed`
     (polled every 100 ms) on a fresh `vidpipe serve` (release build, fresh data
     dir, default settings), vs the bare ffmpeg command that
     `vidpipe transcode --print-command` prints, on the clip.     target <= 1.05x
  2. vs the old design: three sequential ffmpeg runs (x264 medium, -b:v
     800k/1400k/2800k, AAC 128k, HLS 6 s segments), then each output file copied
     one at a time into another directory with fsync (emulates the sequential
     MinIO upload). vidpipe end to end vs that.                   target >= 1.25x faster
  3. Default profile: bare command vs the old design's three encodes (time);
     SSIM of each rung against the source scaled (bicubic) to the rung's size,
     both sides with setpts=PTS-STARTPTS; output bytes per rung.   target >= 2.5x
     faster, SSIM >= old at every rung, total bytes <= old
  4. Time to first playable on the long input: 202 -> lecture shows
     `"playable": true`. Baseline: the old design's time on that input,
     estimated as its clip end-to-end time x (long duration / clip duration),
     since the old design is playable only once it has finished.   target <= 10 s
     (`playable` counts only while `processing`; gives up after 60 s; a server
     without the field gives "n/a (no playable field)")
  5. Upload ingest: curl -F upload of the big file over loopback with the queue
     paused and VIDPIPE_MAX_UPLOAD_BYTES=3GiB; throughput vs `cp` of the same
     file on the same filesystem; server VmHWM after a small (~20 MB) and after
     the big upload.                                               target RSS < 100 MB
  6. API under load: wrk -t2 -c32 on GET /api/lectures/{id} of a completed small
     lecture, on the idle server vs while the long input of test 4 transcodes
     (same server). Requests/s and p99, ratio busy/idle; no target.

Output: a table on stdout and the same rows, BENCHMARKS.md-ready, in
bench/results.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CACHE = BENCH_DIR / ".cache"
VIDPIPE = REPO / "target" / "release" / "vidpipe"
POLL_SECONDS = 0.1
PLAYABLE_GIVE_UP = 60  # seconds; the target is 10

# The old Node/Express + Bull design: one ffmpeg per rung, fixed bitrates.
OLD_LADDER = [(240, "800k"), (360, "1400k"), (720, "2800k")]
OLD_AUDIO = "128k"


@dataclass
class Mode:
    name: str
    clip_seconds: int
    long_seconds: int
    big_bytes: int
    runs: int
    wrk_seconds: int


FULL = Mode("full", clip_seconds=60, long_seconds=600, big_bytes=2 << 30, runs=3, wrk_seconds=10)
QUICK = Mode("quick", clip_seconds=6, long_seconds=60, big_bytes=200 << 20, runs=1, wrk_seconds=3)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes

class Children:
    """Every long-lived child we start, so a failure or ^C can stop them all."""

    procs: list[subprocess.Popen] = []

    @classmethod
    def start(cls, argv, **kw) -> subprocess.Popen:
        # Own session: killing the group also stops the server's ffmpeg.
        p = subprocess.Popen(argv, start_new_session=True, **kw)
        cls.procs.append(p)
        return p

    @classmethod
    def stop(cls, p: subprocess.Popen, grace: float = 10.0) -> None:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            except ProcessLookupError:
                pass
        if p in cls.procs:
            cls.procs.remove(p)

    @classmethod
    def stop_all(cls) -> None:
        for p in list(cls.procs):
            cls.stop(p, grace=3.0)


def run(argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], check=True, **kw)


def timed(argv) -> float:
    """Wall seconds of one command; its stdout (ffmpeg -progress) is dropped."""
    t = time.monotonic()
    run(argv, stdout=subprocess.DEVNULL)
    return time.monotonic() - t


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- vidpipe server

class Server:
    """`vidpipe serve` on a free loopback port with a fresh data dir."""

    def __init__(self, tmp: Path, env: dict[str, str] | None = None):
        self.data = Path(tempfile.mkdtemp(prefix="data-", dir=tmp))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("VIDPIPE_") and k != "DATABASE_URL"}
        full_env.update(env or {})
        self.log = open(self.data.parent / f"{self.data.name}.log", "wb")
        self.proc = Children.start(
            [str(VIDPIPE), "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", str(self.data)],
            env=full_env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vidpipe serve exited with {self.proc.returncode}; see {self.log.name}")
            try:
                self.get("/api/health/queue")
                return
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise RuntimeError("vidpipe serve did not answer within 30 s")
                time.sleep(0.1)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        Children.stop(self.proc)
        self.log.close()
        if exc_type is not None and exc_type is not KeyboardInterrupt:
            tail = Path(self.log.name).read_text(errors="replace").splitlines()[-20:]
            log("vidpipe serve log (last 20 lines):\n" + "\n".join(tail))
        shutil.rmtree(self.data, ignore_errors=True)

    def request(self, method: str, path: str):
        req = urllib.request.Request(self.base + path, method=method)
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
            return json.loads(body) if body else None

    def get(self, path: str):
        return self.request("GET", path)

    def upload(self, path: Path) -> tuple[str, float]:
        """POSTs the file with curl; returns (lectureId, seconds until the 202)."""
        t = time.monotonic()
        out = subprocess.run(
            ["curl", "-sS", "-H", "Expect:", "-w", "\n%{http_code}",
             "-F", f"uploadedFile=@{path}", "-F", "courseId=bench", "-F", "nameOfTopic=benchmark",
             self.base + "/api/upload"],
            check=True, capture_output=True, text=True,
        ).stdout
        elapsed = time.monotonic() - t
        body, _, code = out.rpartition("\n")
        if code != "202":
            raise RuntimeError(f"upload of {path.name} answered {code}: {body}")
        return json.loads(body)["lectureId"], elapsed

    def lecture(self, lid: str) -> dict:
        return self.get(f"/api/lectures/{lid}")

    def wait_for(self, lid: str, done, timeout: float = 4 * 3600, give_up: bool = False) -> dict | None:
        """Polls the lecture every 100 ms until done(doc) is true. After `timeout`
        seconds: None if give_up, else an error."""
        deadline = time.monotonic() + timeout
        while True:
            doc = self.lecture(lid)
            if doc["processingStatus"] == "failed":
                raise RuntimeError(f"lecture {lid} failed: {doc.get('processingError')}")
            if done(doc):
                return doc
            if time.monotonic() > deadline:
                if give_up:
                    return None
                raise RuntimeError(f"lecture {lid} still {doc['processingStatus']} after {timeout} s")
            time.sleep(POLL_SECONDS)

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB -> MiB
        raise RuntimeError("no VmHWM in /proc status")


# ---------------------------------------------------------------- inputs

FFMPEG = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]


def cached(name: str, make) -> Path:
    """Builds CACHE/name with make(tmp_path) once; atomic via rename."""
    path = CACHE / name
    if not path.exists():
        log(f"generating {name} (cached for later runs)")
        tmp = path.with_suffix(".partial" + path.suffix)
        make(tmp)
        tmp.rename(path)
    return path


def make_clip(seconds: int) -> Path:
    def make(out: Path):
        run(FFMPEG + [
            "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-filter_complex", "[0:v]noise=alls=4:allf=t,format=yuv420p[v]",
            "-map", "[v]", "-map", "1:a", "-t", str(seconds),
            "-c:v", "libx264", "-preset", "ultrafast", "-crf", "20", "-threads", "0",
            "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", str(out)])
    return cached(f"clip-1080p30-{seconds}s-v1.mp4", make)


def make_long(clip: Path, clip_seconds: int, seconds: int) -> Path:
    def make(out: Path):
        loops = -(-seconds // clip_seconds) - 1
        run(FFMPEG + ["-stream_loop", str(loops), "-i", str(clip), "-t", str(seconds),
                      "-c", "copy", "-movflags", "+faststart", str(out)])
    return cached(f"long-1080p30-{seconds}s-v1.mp4", make)


def make_ts_chunk(clip: Path) -> Path:
    """About 20 MB of MPEG-TS (first 9 s of the clip, or all of a shorter one)."""
    def make(out: Path):
        run(FFMPEG + ["-i", str(clip), "-t", "9", "-c", "copy", "-f", "mpegts", str(out)])
    return cached(f"chunk-{clip.stem}.ts", make)


def make_big(chunk: Path, size: int, tmp: Path) -> Path:
    """`cat chunk chunk ...` until at least `size` bytes: TS survives concatenation."""
    out = tmp / "big.ts"
    data = chunk.read_bytes()
    with open(out, "wb") as f:
        for _ in range(-(-size // len(data))):
            f.write(data)
    return out


def duration(path: Path) -> float:
    out = run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", path],
              capture_output=True, text=True).stdout
    return float(out.strip())


def video_size(path: Path) -> tuple[int, int]:
    out = run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
               "-of", "json", path], capture_output=True, text=True).stdout
    stream = json.loads(out)["streams"][0]
    return stream["width"], stream["height"]


# ---------------------------------------------------------------- the encodes

def vidpipe_command(src: Path, out: Path) -> list[str]:
    """vidpipe's exact ladder command, as `transcode --print-command` prints it."""
    argv = json.loads(run([VIDPIPE, "transcode", src, "--out", out, "--print-command"],
                          capture_output=True, text=True).stdout)
    # ffmpeg creates the %v directories itself; make them anyway to be safe.
    stream_map = argv[argv.index("-var_stream_map") + 1]
    for name in re.findall(r"name:(\S+)", stream_map):
        (out / name).mkdir(parents=True, exist_ok=True)
    return argv


def old_design_encode(src: Path, out: Path) -> None:
    """Three sequential ffmpeg processes, each decoding the source."""
    for height, bitrate in OLD_LADDER:
        d = out / f"{height}p"
        d.mkdir(parents=True, exist_ok=True)
        run(FFMPEG + ["-i", src, "-vf", f"scale=-2:{height}", "-c:v", "libx264", "-preset", "medium",
                      "-b:v", bitrate, "-c:a", "aac", "-b:a", OLD_AUDIO, "-ac", "2",
                      "-f", "hls", "-hls_time", "6", "-hls_playlist_type", "vod",
                      "-hls_segment_filename", d / "seg_%03d.ts", d / "index.m3u8"],
            stdout=subprocess.DEVNULL)
    (out / "master.m3u8").write_text("#EXTM3U\n" + "".join(
        f"#EXT-X-STREAM-INF:BANDWIDTH={int(b[:-1]) * 1000}\n{h}p/index.m3u8\n" for h, b in OLD_LADDER))


def old_design_upload(out: Path, bucket: Path) -> None:
    """Emulated MinIO upload: every file, one at a time, copied and fsync'ed."""
    for f in sorted(p for p in out.rglob("*") if p.is_file()):
        dst = bucket / f.relative_to(out)
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(f, "rb") as r, open(dst, "wb") as w:
            shutil.copyfileobj(r, w, 1 << 20)
            w.flush()
            os.fsync(w.fileno())


def rung_bytes(out: Path) -> dict[str, int]:
    return {d.name: sum(f.stat().st_size for f in d.iterdir()) for d in sorted(out.iterdir()) if d.is_dir()}


def ssim(out: Path, rungs: list[str], src: Path) -> dict[str, float]:
    """SSIM ('All') of each rung's HLS output against the source scaled (bicubic)
    directly to that rung's size. One ffmpeg run decodes the source once
    for every rung; both sides start at 0 (TS output starts near 1.4 s)."""
    inputs, graph, maps = [], [f"[{len(rungs)}:v]split={len(rungs)}" + "".join(f"[s{i}]" for i in range(len(rungs)))], []
    for i, rung in enumerate(rungs):
        playlist = out / rung / "index.m3u8"
        w, h = video_size(playlist)
        inputs += ["-i", playlist]
        graph.append(f"[s{i}]scale={w}:{h}:flags=bicubic,setsar=1,format=yuv420p,setpts=PTS-STARTPTS[r{i}]")
        graph.append(f"[{i}:v]setpts=PTS-STARTPTS[d{i}]")
        graph.append(f"[d{i}][r{i}]ssim@{rung}[o{i}]")
        maps += ["-map", f"[o{i}]", "-f", "null", "-"]
    err = run(["ffmpeg", "-nostdin", "-hide_banner", *inputs, "-i", src, "-filter_complex", ";".join(graph), *maps],
              capture_output=True, text=True).stderr
    found = dict(re.findall(r"\[ssim@(\S+) @ [^]]*\] SSIM .* All:([0-9.]+)", err))
    if set(found) != set(rungs):
        raise RuntimeError(f"SSIM missing from ffmpeg output for {out}:\n{err[-2000:]}")
    return {rung: float(v) for rung, v in found.items()}


# ---------------------------------------------------------------- wrk

def wrk(url: str, seconds: int) -> dict:
    out = run(["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", url], capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    v, unit = re.search(r"^\s+99%\s+([0-9.]+)(us|ms|s)\s*$", out, re.M).groups()
    p99_ms = float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {"rps": rps, "p99_ms": p99_ms, "non2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(0) if errors else ""}


# ---------------------------------------------------------------- report

class Report:
    def __init__(self):
        self.rows: list[list[str]] = []
        self.notes: list[str] = []

    def row(self, figure: str, value: str, baseline: str, ratio: str, target: str, meets: bool | None):
        verdict = "n/a" if meets is None else ("yes" if meets else "NO")
        self.rows.append([figure, value, baseline, ratio, target, verdict])
        log(f"{figure}: {value} | baseline {baseline} | {ratio} | target {target}: {verdict}")

    def sorted_rows(self) -> list[list[str]]:
        """In figure order (figures are measured in another order); stable within a figure."""
        return sorted(self.rows, key=lambda r: int(r[0].split(".")[0]))

    def note(self, text: str):
        self.notes.append(text)

    def markdown(self, header: list[str]) -> str:
        cols = ["figure", "vidpipe", "baseline", "ratio", "target", "meets"]
        lines = header + ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(r) + " |" for r in self.sorted_rows()]
        lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def table(self, header: list[str]) -> str:
        cols = ["figure", "vidpipe", "baseline", "ratio", "target", "meets"]
        rows = [cols] + self.sorted_rows()
        widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
        fmt = "  ".join(f"{{:{w}}}" for w in widths)
        out = header + [""] + [fmt.format(*r) for r in rows[:1]] + ["  ".join("-" * w for w in widths)]
        out += [fmt.format(*r) for r in rows[1:]]
        return "\n".join(out + [""] + [f"* {n}" for n in self.notes])


def machine_header(mode: Mode) -> list[str]:
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), "unknown")
    mem_kb = int(next(l.split()[1] for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")))
    ffv = run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.splitlines()[0]
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    return [
        f"Date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}, vidpipe commit {commit}, "
        f"mode {mode.name} (medians of {mode.runs} run(s))",
        f"Machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu}, "
        f"{mem_kb / 1024 / 1024:.1f} GiB RAM, load average at start {os.getloadavg()[0]:.2f}",
        f"{ffv}",
    ]


def fmt_s(x: float) -> str:
    return f"{x:.1f} s" if x >= 10 else f"{x:.2f} s"


# ---------------------------------------------------------------- the benchmarks

def bench_encodes(mode: Mode, clip: Path, tmp: Path, rep: Report) -> dict:
    """Figures 1, 2 and 3 on the clip. Returns the medians for figure 4."""
    bare, old_enc, old_up, e2e = [], [], [], []
    bare_out, old_out = tmp / "bare", tmp / "old"
    for i in range(mode.runs):
        log(f"run {i + 1}/{mode.runs}: vidpipe bare command")
        shutil.rmtree(bare_out, ignore_errors=True)
        bare.append(timed(vidpipe_command(clip, bare_out)))
        log(f"  {bare[-1]:.2f} s")

        log(f"run {i + 1}/{mode.runs}: vidpipe serve, upload -> completed")
        with Server(tmp) as srv:
            lid, _ = srv.upload(clip)
            t0 = time.monotonic()
            srv.wait_for(lid, lambda d: d["processingStatus"] == "completed")
            e2e.append(time.monotonic() - t0)
        log(f"  {e2e[-1]:.2f} s")

        log(f"run {i + 1}/{mode.runs}: old design, 3 encodes + sequential upload")
        shutil.rmtree(old_out, ignore_errors=True)
        bucket = tmp / "bucket"
        shutil.rmtree(bucket, ignore_errors=True)
        t = time.monotonic()
        old_design_encode(clip, old_out)
        old_enc.append(time.monotonic() - t)
        t = time.monotonic()
        old_design_upload(old_out, bucket)
        old_up.append(time.monotonic() - t)
        shutil.rmtree(bucket, ignore_errors=True)
        log(f"  encode {old_enc[-1]:.2f} s + upload {old_up[-1]:.2f} s")

    m_bare, m_e2e = statistics.median(bare), statistics.median(e2e)
    m_old_enc = statistics.median(old_enc)
    m_old_e2e = statistics.median([a + b for a, b in zip(old_enc, old_up)])
    src_s = duration(clip)

    # Ratios are paired: each run times the contenders back to back, so a
    # slow-down of a shared host that spans one run cancels out in its ratio.
    def paired(num, den) -> tuple[float, str]:
        ratios = [a / b for a, b in zip(num, den)]
        return statistics.median(ratios), "/".join(f"{x:.2f}" for x in ratios)

    r, each = paired(e2e, bare)
    rep.row(f"1. end to end, 202 -> completed ({src_s:.0f} s 1080p30)", fmt_s(m_e2e),
            f"bare ffmpeg command {fmt_s(m_bare)}", f"{r:.3f}x the bare command (runs {each})", "<= 1.05x", r <= 1.05)
    r, each = paired([a + b for a, b in zip(old_enc, old_up)], e2e)
    rep.row("2. end to end vs old design", fmt_s(m_e2e),
            f"old design {fmt_s(m_old_e2e)} (encode {fmt_s(m_old_enc)} + upload {fmt_s(statistics.median(old_up))})",
            f"{r:.2f}x faster (runs {each})", ">= 1.25x faster", r >= 1.25)
    r, each = paired(old_enc, bare)
    rep.row("3. encode time, default profile", fmt_s(m_bare), f"old design encodes {fmt_s(m_old_enc)}",
            f"{r:.2f}x faster (runs {each})", ">= 2.5x faster", r >= 2.5)

    log("SSIM of every rung, both designs (last run's outputs)")
    new_b, old_b = rung_bytes(bare_out), rung_bytes(old_out)
    ssim_new, ssim_old = ssim(bare_out, list(new_b), clip), ssim(old_out, list(new_b), clip)
    for rung in new_b:
        s_new, s_old = ssim_new[rung], ssim_old[rung]
        rep.row(f"3. SSIM {rung}", f"{s_new:.5f}", f"old {s_old:.5f}", f"{s_new - s_old:+.5f}", ">= old", s_new >= s_old)
        rep.row(f"3. bytes {rung}", f"{new_b[rung] / 1e6:.2f} MB", f"old {old_b.get(rung, 0) / 1e6:.2f} MB",
                f"{new_b[rung] / old_b[rung]:.2f}x", "(total below)", None)
    tn, to = sum(new_b.values()), sum(old_b.values())
    rep.row("3. bytes, all rungs", f"{tn / 1e6:.2f} MB", f"old {to / 1e6:.2f} MB", f"{tn / to:.2f}x", "<= 1.00x", tn <= to)
    rep.note("Figures 1-3: times are medians; each ratio is the median of the per-run ratios (every run times "
             "vidpipe's bare command, vidpipe end to end and the old design back to back), listed as 'runs'.")
    rep.note(f"Old design: 3 sequential ffmpeg (one per rung, each decodes the source), libx264 -preset medium, "
             f"-b:v {'/'.join(b for _, b in OLD_LADDER)}, AAC {OLD_AUDIO} stereo, HLS 6 s MPEG-TS segments; its "
             f"MinIO upload is emulated by copying each output file, one at a time, into another directory on the "
             f"same filesystem with fsync.")
    rep.note("SSIM: each rendition vs the source scaled with bicubic to the rendition's size, both sides "
             "setpts=PTS-STARTPTS; ffmpeg ssim filter, 'All' value. Bytes: every file of the rung's directory "
             "(segments, fMP4 init section, media playlist).")
    shutil.rmtree(bare_out, ignore_errors=True)
    shutil.rmtree(old_out, ignore_errors=True)
    return {"old_e2e": m_old_e2e, "clip_seconds": src_s}


def make_tiny() -> Path:
    """A 2 s 360p clip: the lecture the load test queries."""
    def make(out: Path):
        run(FFMPEG + ["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-t", "2",
                      "-c:v", "libx264", "-preset", "ultrafast", str(out)])
    return cached("tiny-360p-2s-v1.mp4", make)


def bench_playable_and_load(mode: Mode, long: Path, tmp: Path, rep: Report, enc: dict, have_wrk: bool) -> None:
    """Figure 4 on the long input, then figure 6 on the same server while it transcodes.

    The load test queries a small lecture that is already completed, once on the
    idle server and once while the long input transcodes, so both measure the
    same request and the same answer."""
    long_s = duration(long)
    est_old = enc["old_e2e"] * long_s / enc["clip_seconds"]
    length = f"{long_s / 60:.0f} min" if long_s >= 60 else f"{long_s:.0f} s"
    figure = f"4. time to first playable ({length} 1080p30)"
    with Server(tmp) as srv:
        if have_wrk:
            tiny, _ = srv.upload(make_tiny())
            srv.wait_for(tiny, lambda d: d["processingStatus"] == "completed")
            url = f"{srv.base}/api/lectures/{tiny}"
            log(f"wrk {mode.wrk_seconds} s on the idle server")
            idle = wrk(url, mode.wrk_seconds)

        lid, _ = srv.upload(long)
        t0 = time.monotonic()
        # Playable counts only while still processing (a completed lecture is playable too).
        # Give up after PLAYABLE_GIVE_UP s so the load test below still runs during the transcode.
        doc = srv.wait_for(lid, lambda d: d["processingStatus"] == "completed" or (
            d["processingStatus"] == "processing" and d.get("playable", True) is True),
            timeout=PLAYABLE_GIVE_UP, give_up=True)
        ttp = time.monotonic() - t0
        base = f"old design est. {fmt_s(est_old)}"
        if doc is None:
            rep.row(figure, f"not playable after {PLAYABLE_GIVE_UP} s", base, "n/a", "<= 10 s", False)
        elif "playable" not in doc:
            rep.row(figure, "n/a (no playable field)", base, "n/a", "<= 10 s", None)
        elif doc["processingStatus"] == "processing":
            rep.row(figure, fmt_s(ttp), base, f"{est_old / ttp:.0f}x sooner", "<= 10 s", ttp <= 10)
            rep.note(f"At first playable the lecture showed progress {doc.get('progress')}% "
                     f"and videoLink {'set' if doc.get('videoLink') else 'NOT set'}.")
        else:
            rep.row(figure, f"none before completion ({fmt_s(ttp)})", base, "n/a", "<= 10 s", False)
        rep.note("Time to first playable: from the 202 until GET /api/lectures/{id} shows playable: true "
                 "(polled every 100 ms). Baseline: the old design is playable only once finished; its time on "
                 "this input is estimated as its measured clip end-to-end time x the duration ratio "
                 f"({fmt_s(enc['old_e2e'])} x {long_s:.0f}/{enc['clip_seconds']:.0f}).")

        if have_wrk:
            log(f"wrk {mode.wrk_seconds} s while the long input transcodes")
            busy = wrk(url, mode.wrk_seconds)
            status = srv.lecture(lid)["processingStatus"]
            if status != "processing":
                rep.note(f"WARNING: the long input was {status} by the end of the busy load test, "
                         "so part of it ran without a transcode.")
            for key, label in (("rps", "requests/s"), ("p99_ms", "p99 latency")):
                unit = " ms" if key == "p99_ms" else ""
                v, b = busy[key], idle[key]
                rep.row(f"6. GET /api/lectures/{{id}} {label}, transcoding", f"{v:,.1f}{unit}",
                        f"idle {b:,.1f}{unit}", f"{v / b:.2f}x idle", "(measured)", None)
            for name, res in (("idle", idle), ("busy", busy)):
                if res["non2xx"] or res["socket_errors"]:
                    rep.note(f"wrk {name}: {res['non2xx']} non-2xx answers; {res['socket_errors']}")
            rep.note(f"Load: wrk -t2 -c32 -d{mode.wrk_seconds}s --latency on loopback against a completed "
                     "lecture's GET; wrk runs on the same machine (it shares the CPUs with ffmpeg); "
                     "idle = nothing else running, busy = the long input transcoding.")
        else:
            rep.row("6. API under load", "n/a (wrk not installed)", "", "", "", None)
        # DELETE stops the running ffmpeg, so the server can stop at once.
        try:
            srv.request("DELETE", f"/api/lectures/{lid}")
        except urllib.error.URLError:
            pass


def bench_upload(mode: Mode, clip: Path, tmp: Path, rep: Report) -> None:
    """Figure 5: upload throughput and server peak RSS, queue paused."""
    chunk = make_ts_chunk(clip)
    big = make_big(chunk, mode.big_bytes, tmp)
    size = big.stat().st_size
    with Server(tmp, {"VIDPIPE_MAX_UPLOAD_BYTES": "3GiB"}) as srv:
        srv.request("POST", "/api/queue/pause")
        rss_start = srv.peak_rss_mb()
        _, t_small = srv.upload(chunk)
        rss_small = srv.peak_rss_mb()
        log(f"uploading {size / 2**30:.2f} GiB")
        _, t_big = srv.upload(big)
        rss_big = srv.peak_rss_mb()
        dst = srv.data.parent / "cp-copy.ts"  # same filesystem as the server's data dir
        t = time.monotonic()
        run(["cp", big, dst])
        t_cp = time.monotonic() - t
        dst.unlink()
    big.unlink()
    up, cp = size / t_big / 2**20, size / t_cp / 2**20
    rep.row(f"5. upload ingest, {size / 2**30:.2f} GiB MPEG-TS", f"{up:,.0f} MiB/s ({fmt_s(t_big)})",
            f"cp {cp:,.0f} MiB/s ({fmt_s(t_cp)})", f"{up / cp:.2f}x cp", "(measured)", None)
    rep.row("5. server peak RSS (VmHWM)", f"{rss_big:.1f} MiB after the big upload",
            f"{rss_small:.1f} MiB after a {chunk.stat().st_size / 1e6:.0f} MB upload (start {rss_start:.1f} MiB)",
            f"{rss_big / rss_small:.2f}x", "< 100 MB", rss_big * 2**20 < 100e6)
    rep.note("Upload: curl -F uploadedFile=@file over loopback, timed until the 202 (includes vidpipe's probe), "
             "queue paused, VIDPIPE_MAX_UPLOAD_BYTES=3GiB; the file is a ~20 MB TS cut concatenated with cat. "
             "Baseline: cp of the same (page-cached) file on the same filesystem, no fsync on either side.")


def interrupt(signum, frame):
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", default=os.environ.get("QUICK") == "1",
                    help="short inputs, 1 run (checks the harness end to end in ~3 minutes)")
    ap.add_argument("--runs", type=int, help="runs per timed figure (default: 3, quick: 1)")
    ap.add_argument("--out", type=Path, default=BENCH_DIR / "results.md", help="markdown rows (default bench/results.md)")
    args = ap.parse_args()
    mode = QUICK if args.quick else FULL
    if args.runs:
        mode.runs = args.runs

    if not VIDPIPE.exists():
        sys.exit(f"{VIDPIPE} missing: run bench/run.sh (it builds it) or cargo build --release")
    have_wrk = shutil.which("wrk") is not None

    # SIGTERM behaves like ^C, so the finally below cleans up.
    signal.signal(signal.SIGTERM, interrupt)
    CACHE.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="run-", dir=CACHE))
    rep = Report()
    header = machine_header(mode)
    started = time.monotonic()
    try:
        clip = make_clip(mode.clip_seconds)
        long = make_long(clip, mode.clip_seconds, mode.long_seconds)
        enc = bench_encodes(mode, clip, tmp, rep)
        bench_playable_and_load(mode, long, tmp, rep, enc, have_wrk)
        bench_upload(mode, clip, tmp, rep)
    finally:
        Children.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    rep.note(f"Inputs: lavfi testsrc2 1920x1080 30 fps + noise=alls=4:allf=t + 440 Hz sine, x264 ultrafast CRF 20 "
             f"(~18 Mbit/s) + AAC 128k; clip {mode.clip_seconds} s, long input = the clip looped to "
             f"{mode.long_seconds} s. Harness wall time {time.monotonic() - started:.0f} s.")
    print(rep.table(header))
    args.out.write_text(rep.markdown(header))
    log(f"rows written to {args.out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
