// A lecture as a viewer sees it: title, course, live status, and a player
// that starts as soon as the lecture is playable (while higher renditions
// are still being made) and lists every quality. Reads the keyless
// `/api/lectures/{id}/viewing`, every 2 s until the lecture is final.
"use strict";

vidpipe.showLecture = function showLecture(id, root) {
  const part = (name) => root.querySelector(`[data-part=${name}]`);
  const [title, course, status, progress, video, quality, qualityLabel] =
    ["title", "course", "status", "progress", "video", "quality", "quality-label"].map(part);
  let hls = null;
  let attached = false;

  function describe(v) {
    switch (v.processingStatus) {
      case "pending": return v.processingError ? `Waiting to try again (${v.processingError})` : "Waiting for a worker";
      case "processing": return `Processing: ${v.progress}%` + (v.playable ? " (you can watch it already)" : "");
      case "completed": return "Ready";
      case "failed": return "Failed: " + (v.processingError || "no reason recorded");
      default: return v.processingStatus;
    }
  }

  function attach(url) {
    attached = true;
    if (window.Hls && Hls.isSupported()) {
      hls = new Hls();
      hls.on(Hls.Events.MANIFEST_PARSED, () => {
        quality.replaceChildren(vidpipe.el("option", { value: "-1" }, "Auto"));
        hls.levels.forEach((level, i) => quality.append(vidpipe.el("option", { value: i }, `${level.height}p`)));
        qualityLabel.hidden = false;
      });
      hls.loadSource(url);
      hls.attachMedia(video);
    } else {
      // Safari plays HLS itself, and picks the quality itself.
      video.src = url;
    }
    video.hidden = false;
    video.play().catch(() => { /* autoplay refused: the controls are there */ });
  }

  quality.addEventListener("change", () => {
    if (hls) hls.currentLevel = Number(quality.value);
  });

  async function poll() {
    let final = false;
    try {
      const v = await vidpipe.api(`/api/lectures/${encodeURIComponent(id)}/viewing`);
      title.textContent = v.nameOfTopic;
      course.textContent = "Course: " + v.courseId;
      status.textContent = describe(v);
      status.className = v.processingStatus === "failed" ? "error" : v.processingStatus === "completed" ? "ok" : "";
      root.dataset.status = v.processingStatus;
      progress.value = v.progress;
      progress.hidden = v.processingStatus === "completed" || v.processingStatus === "failed";
      if (v.thumbnailLink) video.poster = v.thumbnailLink;
      if (v.playable && v.videoLink && !attached) attach(v.videoLink);
      final = v.processingStatus === "completed" || v.processingStatus === "failed";
    } catch (e) {
      status.textContent = vidpipe.explain(e);
      status.className = "error";
      final = e.status === 404;
    }
    if (!final) setTimeout(poll, 2000);
  }
  poll();
  return { video, hls: () => hls };
};
