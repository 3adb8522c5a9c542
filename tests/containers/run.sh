#!/usr/bin/env bash
# The container test: builds the images from this machine's package
# registries only, runs compose.yaml with podman-compose and three workers,
# and checks what an operator relies on:
#   1. an upload through the published API port completes and plays;
#   2. `podman kill` of the worker running the transcode: the job completes
#      on another worker and plays;
#   3. `down` then `up`: the lecture and its files are still there;
#   4. `down -v` leaves no container and no volume.
# Called by .ci/run; fails loudly when podman cannot run.
#
# Env: VIDPIPE_BINARY (default target/debug/vidpipe), VIDPIPE_CI_CACHE
# (where the Debian base is kept), VIDPIPE_TEST_S3S_FS (the s3s-fs binary).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
export CONTAINERS_CONF="$ROOT/tests/containers/containers.conf"
CACHE="${VIDPIPE_CI_CACHE:-$HOME/.cache/vidpipe-ci}"
BINARY="${VIDPIPE_BINARY:-target/debug/vidpipe}"
S3S_FS="${VIDPIPE_TEST_S3S_FS:-$CACHE/bin/s3s-fs}"
PROJECT="vidpipe-ctest"
PORT="${VIDPIPE_CONTAINER_TEST_PORT:-18080}"
S3_PORT="${VIDPIPE_CONTAINER_TEST_S3_PORT:-19000}"
started=$SECONDS

step() { echo "--- containers ($((SECONDS - started))s): $*"; }
fail() { echo "FAIL (containers): $*" >&2; exit 1; }
# Polls `$@` once a second until it succeeds or `$1` seconds pass.
within() {
  local limit=$1; shift
  local deadline=$((SECONDS + limit))
  until "$@"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 1
  done
}

command -v podman >/dev/null || fail "podman is not installed (apt-get install -y podman runc podman-compose debootstrap)"
[ -x "$BINARY" ] || fail "$BINARY is missing: cargo build first"
[ -x "$S3S_FS" ] || fail "s3s-fs is missing at $S3S_FS (.ci/run installs it)"

WORK="$(mktemp -d)"
# podman-compose's own output goes to a log, shown when a step fails.
compose() { podman-compose -p "$PROJECT" -f "$WORK/compose.yaml" "$@" >>"$WORK/compose.log" 2>&1; }
cleanup() {
  local rc=$?
  if [ $rc -ne 0 ]; then
    echo "--- containers: podman-compose output (last 40 lines)" >&2
    tail -n 40 "$WORK/compose.log" >&2 2>/dev/null || true
    echo "--- containers: logs after the failure" >&2
    for c in $(podman ps -a --filter "label=io.podman.compose.project=$PROJECT" --format '{{.Names}}'); do
      echo "=== $c" >&2
      podman logs --tail 30 "$c" >&2 2>&1 || true
    done
  fi
  compose down -v || true
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT

# --- images -------------------------------------------------------------
# A Debian base made with debootstrap (nothing can be pulled from a
# registry here), kept as a tarball in the cache.
if ! podman image exists localhost/vidpipe-base:bookworm; then
  if [ ! -s "$CACHE/debian-bookworm-minbase.tar" ]; then
    step "debootstrap bookworm (once; cached in $CACHE)"
    mirror="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)"
    rootfs="$(mktemp -d)"
    debootstrap --variant=minbase bookworm "$rootfs" "${mirror:-http://deb.debian.org/debian}" >/dev/null
    mkdir -p "$CACHE"
    tar -C "$rootfs" -cf "$CACHE/debian-bookworm-minbase.tar" .
    rm -rf "$rootfs"
  fi
  step "importing the base image"
  podman import -q "$CACHE/debian-bookworm-minbase.tar" localhost/vidpipe-base:bookworm >/dev/null
fi
build() { podman build -q --format docker "$@" >/dev/null; }
step "building the runtime image (Containerfile --target runtime)"
build --target runtime --build-arg DEBIAN_IMAGE=localhost/vidpipe-base:bookworm -t localhost/vidpipe-runtime -f Containerfile .
ctx="$WORK/vidpipe-context"; mkdir -p "$ctx"; cp "$BINARY" "$ctx/vidpipe"
build --build-arg RUNTIME=localhost/vidpipe-runtime -t localhost/vidpipe:test -f deploy/Containerfile.prebuilt "$ctx"
ctx="$WORK/s3-context"; mkdir -p "$ctx"; cp "$S3S_FS" "$ctx/s3s-fs"; cp tests/containers/{s3.Containerfile,mc} "$ctx/"
build -t localhost/vidpipe-test-s3 -f "$ctx/s3.Containerfile" "$ctx"
build -t localhost/vidpipe-test-postgres -f tests/containers/postgres.Containerfile tests/containers
podman image inspect localhost/vidpipe-runtime --format '{{.Size}}' |
  awk '{ printf "--- containers: runtime image %.0f MB\n", $1 / 1e6 }'

# --- compose up with three workers ---------------------------------------
cp compose.yaml "$WORK/"
cp deploy/vidpipe.env.example "$WORK/vidpipe.env"
# Quicker takeover of a killed worker's job than the 30 s default lease, and
# the store's published port for viewers.
sed -i "s|^VIDPIPE_S3_PUBLIC_ENDPOINT=.*|VIDPIPE_S3_PUBLIC_ENDPOINT=http://localhost:$S3_PORT|" "$WORK/vidpipe.env"
echo "VIDPIPE_LEASE=8s" >> "$WORK/vidpipe.env"
export VIDPIPE_IMAGE=localhost/vidpipe:test POSTGRES_IMAGE=localhost/vidpipe-test-postgres
export S3_IMAGE=localhost/vidpipe-test-s3 S3_INIT_IMAGE=localhost/vidpipe-test-s3 VIDPIPE_PORT=$PORT S3_PORT
# podman-compose 1.0 ignores --scale and reads deploy.replicas from this.
export VIDPIPE_WORKERS=3
compose down -v || true

step "compose up postgres and s3"
compose up -d postgres s3 s3-init
healthy() { [ "$(podman inspect --format '{{.State.Health.Status}}' "$1" 2>/dev/null)" = healthy ]; }
# podman without systemd runs health checks only on demand.
probe() { podman healthcheck run "$1" >/dev/null 2>&1; }
within 90 probe "${PROJECT}_postgres_1" || fail "postgres never became healthy"
within 60 probe "${PROJECT}_s3_1" || fail "s3 never became healthy"
step "the first API key (vidpipe keys create, in a one-off api container)"
compose run --rm api keys create --name ci --scope admin || true
KEY="$(grep -o 'vp_[A-Za-z0-9_-]*' "$WORK/compose.log" | head -n1 || true)"
[ -n "$KEY" ] || fail "keys create printed no key"
step "compose up --scale worker=3"
compose up -d --scale worker=3
API="http://127.0.0.1:$PORT"
within 90 curl -fsS -o /dev/null "$API/api/health" || fail "the API never answered on port $PORT"
workers() { podman ps --filter "label=io.podman.compose.project=$PROJECT" --filter "label=com.docker.compose.service=worker" --format '{{.Names}}'; }
[ "$(workers | wc -l)" -eq 3 ] || fail "expected 3 workers, got: $(workers | tr '\n' ' ')"
for w in $(workers); do within 60 probe "$w" || fail "$w never became healthy"; done

# --- 1. upload, complete, play --------------------------------------------
CLIP="$WORK/clip.mp4"
ffmpeg -v error -y -f lavfi -i testsrc2=size=1280x720:rate=30:duration=40 -f lavfi -i sine=duration=40 \
  -c:v libx264 -preset ultrafast -c:a aac "$CLIP"
auth=(-H "Authorization: Bearer $KEY")
upload() {
  curl -fsS "${auth[@]}" -F courseId=c1 -F nameOfTopic=containers -F "uploadedFile=@$CLIP" "$API/api/upload" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["lectureId"])'
}
field() { curl -fsS "${auth[@]}" "$API/api/$1" | python3 -c "import json,sys; d=json.load(sys.stdin); print(d.get('$2') or '')"; }
status_is() { [ "$(field "lectures/$1" processingStatus)" = "$2" ]; }
# Plays the lecture from this machine, as a viewer would: master and
# playlists from the API's published port, segments presigned for the
# store's published port (VIDPIPE_S3_PUBLIC_ENDPOINT). Prints the duration.
play() {
  ffprobe -v error -show_entries format=duration -of csv=p=0 "$API/api/lectures/$1/master.m3u8" 2>&1
}
plays_whole() {
  local d; d="$(play "$1")" || fail "lecture $1 does not play: $d"
  python3 -c "import sys; d=float('$d'); sys.exit(0 if abs(d - 40) < 1 else 1)" || fail "lecture $1 plays $d s of 40 s"
  echo "--- containers: lecture $1 plays, $d s"
}
step "upload through the published port"
FIRST="$(upload)"
within 240 status_is "$FIRST" completed || fail "lecture $FIRST never completed: $(curl -s "${auth[@]}" "$API/api/lectures/$FIRST")"
plays_whole "$FIRST"

# --- 2. kill -9 the worker running a transcode ------------------------------
step "upload, then podman kill the worker running its transcode"
SECOND="$(upload)"
running_on() { local w; w="$(field "jobs/$SECOND" worker)"; [ -n "$w" ] && echo "$w"; }
within 60 running_on >/dev/null || fail "no worker took lecture $SECOND"
victim_id="$(running_on)"            # hostname:pid; a container's hostname is its short id
victim="$(podman ps --filter "label=io.podman.compose.project=$PROJECT" --format '{{.ID}} {{.Names}}' |
  awk -v h="${victim_id%%:*}" 'index($1, h) == 1 { print $2 }')"
[ -n "$victim" ] || fail "no container for worker $victim_id"
status_is "$SECOND" processing || fail "lecture $SECOND is not processing when its worker is killed"
podman kill -s KILL "$victim" >/dev/null
# A dead machine: it does not come back (its restart policy would restart it).
podman rm -f "$victim" >/dev/null
echo "--- containers: killed $victim (worker $victim_id) mid-transcode"
within 240 status_is "$SECOND" completed || fail "lecture $SECOND never completed after its worker died"
finisher="$(field "jobs/$SECOND" worker)"
[ "$finisher" != "$victim_id" ] || fail "the killed worker $victim_id finished the job"
attempts="$(field "jobs/$SECOND" attempts)"
echo "--- containers: completed by $finisher after $attempts attempt(s)"
plays_whole "$SECOND"

# --- 3. down, up: everything is still there ---------------------------------
step "compose down, then up again"
compose down
[ -z "$(podman ps -a -q --filter "label=io.podman.compose.project=$PROJECT")" ] || fail "containers left after down"
compose up -d postgres s3 s3-init
within 90 probe "${PROJECT}_postgres_1" || fail "postgres never became healthy again"
within 60 probe "${PROJECT}_s3_1" || fail "s3 never became healthy again"
compose up -d --scale worker=3
within 90 curl -fsS -o /dev/null "$API/api/health" || fail "the API never came back"
for id in "$FIRST" "$SECOND"; do
  status_is "$id" completed || fail "lecture $id is not completed after down and up"
  plays_whole "$id"
done

# --- 4. down -v leaves nothing -----------------------------------------------
step "compose down -v"
compose down -v
left="$(podman ps -a -q --filter "label=io.podman.compose.project=$PROJECT")"
[ -z "$left" ] || fail "containers left after down -v: $left"
volumes="$(podman volume ls -q | grep "^${PROJECT}_" || true)"
[ -z "$volumes" ] || fail "volumes left after down -v: $volumes"
step "passed"
