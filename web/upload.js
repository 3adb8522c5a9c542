// The upload page: a resumable (tus) upload with progress, speed, time
// left, pause and resume, then the lecture's live status and player.
//
// With `#upload=/api/direct-uploads/<id>/<secret>` in the address (a
// one-time URL a site's backend made) the page uploads there, with no key
// and no fields to fill: the URL fixed them. Otherwise it uploads to
// `/api/uploads` with the course and topic typed here and, where the API
// has keys, a key typed into this tab.
"use strict";

const $ = (id) => document.getElementById(id);
const direct = new URLSearchParams(location.hash.slice(1)).get("upload");
let upload = null;
let lectureId = null;
let samples = [];

if (direct) {
  $("fields").hidden = true;
  $("course").required = $("topic").required = false;
  $("key-box").hidden = true;
}
$("key").value = vidpipe.key() || "";
$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  vidpipe.setKey($("key").value.trim());
  $("key-box").open = false;
});

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

function showProgress(sent, total) {
  const now = Date.now();
  samples.push([now, sent]);
  samples = samples.filter(([t]) => now - t < 5000);
  const [t0, b0] = samples[0];
  const speed = now > t0 ? ((sent - b0) * 1000) / (now - t0) : 0;
  const left = speed > 0 ? (total - sent) / speed : Infinity;
  $("bar").value = total ? (100 * sent) / total : 0;
  $("bytes").textContent =
    `${vidpipe.bytes(sent)} of ${vidpipe.bytes(total)} · ${vidpipe.bytes(speed)}/s · ${vidpipe.seconds(left)} left`;
}

/** The API's sentence for a failed tus request. */
function tusError(error) {
  const response = error.originalResponse;
  if (!response) return "The upload stopped: " + error.message + ". Press Resume to continue.";
  let message = "";
  try { message = JSON.parse(response.getBody()).message; } catch { message = response.getBody(); }
  const status = response.getStatus();
  return vidpipe.explain(new vidpipe.ApiError(status, message, response.getHeader("Retry-After")));
}

function start(file) {
  showError("");
  samples = [];
  const metadata = { filename: file.name };
  if (!direct) Object.assign(metadata, { courseId: $("course").value, nameOfTopic: $("topic").value });
  upload = new tus.Upload(file, {
    endpoint: direct || "/api/uploads",
    chunkSize: 16 * 1024 * 1024,
    retryDelays: [0, 1000, 3000, 5000, 10000],
    metadata,
    headers: direct ? {} : vidpipe.authorization(),
    removeFingerprintOnSuccess: true,
    // 4xx other than a conflict will not change by trying again.
    onShouldRetry: (error) => {
      const status = error.originalResponse ? error.originalResponse.getStatus() : 0;
      return status === 0 || status === 409 || status === 423 || (status >= 500 && status !== 507);
    },
    onProgress: showProgress,
    onAfterResponse: (_request, response) => {
      lectureId = response.getHeader("Vidpipe-Lecture-Id") || lectureId;
    },
    onSuccess: () => {
      $("progress-box").hidden = true;
      $("upload-form").hidden = true;
      showLecture();
    },
    onError: (error) => {
      showError(tusError(error));
      $("pause").hidden = true;
      $("resume").hidden = false;
    },
  });
  $("progress-box").hidden = false;
  $("pause").hidden = false;
  $("resume").hidden = true;
  $("start").disabled = true;
  // A page reloaded mid-upload continues the same upload, not from 0.
  upload.findPreviousUploads().then((previous) => {
    if (previous.length) upload.resumeFromPreviousUpload(previous[0]);
    upload.start();
  });
}

function showLecture() {
  if (!lectureId) {
    showError("The upload finished, but the server named no lecture.");
    return;
  }
  $("lecture").hidden = false;
  $("watch-link").href = "/watch/" + encodeURIComponent(lectureId);
  window.lecture = vidpipe.showLecture(lectureId, $("lecture"));
}

$("upload-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const file = $("file").files[0];
  if (!file) return showError("Choose a video file first.");
  start(file);
});
$("pause").addEventListener("click", () => {
  upload.abort();
  $("pause").hidden = true;
  $("resume").hidden = false;
  $("bytes").textContent += " · paused";
});
$("resume").addEventListener("click", () => {
  showError("");
  samples = [];
  $("pause").hidden = false;
  $("resume").hidden = true;
  upload.start();
});
