#!/usr/bin/env bash
# vidpipe benchmarks (issue 5): builds the release binary, installs wrk if
# missing, then runs bench/bench.py, which prints a table and writes
# BENCHMARKS.md-ready rows to bench/results.md. See bench/bench.py's header
# for what is measured and how.
#
#   bench/run.sh            full run (~20 min on 2 cores; first run also generates inputs)
#   bench/run.sh --quick    short inputs, 1 run: checks the harness in ~3 min
#   bench/run.sh --runs 5   more runs per timed figure
#   BENCH_NO_BUILD=1 bench/run.sh   use target/release/vidpipe as it is
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in ffmpeg ffprobe curl python3; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is required" >&2; exit 1; }
done
python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' || { echo "bench: python3 >= 3.9 required" >&2; exit 1; }

if ! command -v wrk >/dev/null; then
    echo "bench: installing wrk for the load test" >&2
    if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
    $SUDO apt-get install -y wrk >&2 || { $SUDO apt-get update >&2 && $SUDO apt-get install -y wrk >&2; } \
        || echo "bench: could not install wrk; the load test will be reported n/a" >&2
fi

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
    cargo build --release >&2
fi

exec python3 bench/bench.py "$@"
