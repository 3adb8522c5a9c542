// The queue dashboard: counts and the paused flag, job lists per state
// with paging, a job's attempts, actions (retry, cancel, retry every
// failed job, pause and resume, delete a lecture), and search. Everything
// refreshes every 2 s without a reload. The key is typed into a form and
// kept in this tab's sessionStorage only.
"use strict";

const $ = (id) => document.getElementById(id);
const { api, el } = vidpipe;
const STATES = ["waiting", "active", "delayed", "failed", "completed", "cancelled"];
let state = "waiting";
let cursors = [null]; // the cursor of each page shown so far
let lectures = new Map(); // id -> {topic, course}, which never change

function showError(text) {
  $("error").textContent = text || "";
  $("error").hidden = !text;
}

/** Calls the API; a refusal for want of a key shows the sign-in form. */
async function call(path, options) {
  try {
    const answer = await api(path, options);
    showError("");
    return answer;
  } catch (e) {
    if (e.status === 401 || e.status === 403) {
      $("login").hidden = false;
      $("dashboard").hidden = true;
    }
    showError(vidpipe.explain(e));
    throw e;
  }
}

async function lecture(id) {
  if (!lectures.has(id)) {
    try {
      const doc = await call(`/api/lectures/${id}`);
      lectures.set(id, { topic: doc.nameOfTopic, course: doc.courseId });
    } catch {
      return { topic: "(deleted)", course: "" };
    }
  }
  return lectures.get(id);
}

async function act(path, what) {
  try {
    await call(path, { method: "POST" });
    await refresh();
  } catch { /* shown */ }
}

// A chunked lecture's chunk jobs (`<lecture>.c0003-of-0010x60s`,
// `<lecture>.audio`) belong to their lecture, which retries and cancels them.
const lectureOf = (id) => id.split(".")[0];
const chunkOf = (id) => (id.includes(".") ? ` (${id.split(".")[1]})` : "");

function actions(job) {
  const buttons = [];
  if (job.id.includes(".")) return buttons;
  if (job.state === "failed" || job.state === "cancelled") {
    buttons.push(el("button", { type: "button", onclick: () => act(`/api/jobs/${job.id}/retry`) }, "Retry"));
  }
  if (["waiting", "active", "delayed"].includes(job.state)) {
    buttons.push(el("button", { type: "button", class: "secondary", onclick: () => act(`/api/jobs/${job.id}/cancel`) }, "Cancel"));
  }
  return buttons;
}

async function renderCounts() {
  const health = await call("/api/health/queue");
  const q = health.queue;
  $("counts").replaceChildren(...STATES.map((s) => el("li", { "data-state": s }, `${s}: ${q[s]}`)));
  $("paused-state").textContent = q.paused ? "The queue is paused: workers take no new jobs." : "The queue is running.";
  $("pause").hidden = q.paused;
  $("resume").hidden = !q.paused;
  for (const button of $("tabs").children) {
    button.textContent = `${button.dataset.state} (${q[button.dataset.state]})`;
  }
}

async function renderJobs() {
  const cursor = cursors[cursors.length - 1];
  const query = new URLSearchParams({ state, limit: "20" });
  if (cursor) query.set("cursor", cursor);
  const page = await call(`/api/jobs?${query}`);
  const rows = [];
  for (const job of page.jobs) {
    const { topic, course } = await lecture(lectureOf(job.id));
    rows.push(el("tr", { "data-job": job.id, "data-state": job.state },
      el("td", {}, el("a", { href: `#job=${job.id}` }, job.id.slice(0, 12) + "…")),
      el("td", {}, topic + chunkOf(job.id)),
      el("td", {}, course),
      el("td", {}, job.state),
      el("td", {}, `${job.attempts}/${job.maxAttempts}`),
      el("td", {}, `${job.progress}%`),
      el("td", {}, job.worker || ""),
      el("td", {}, vidpipe.age(job.createdAt)),
      el("td", { class: "error-text" }, job.lastError || ""),
      el("td", {}, ...actions(job))));
  }
  $("jobs").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 10 }, `No ${state} jobs.`))]));
  $("next").disabled = !page.nextCursor;
  $("next").dataset.cursor = page.nextCursor || "";
  $("first").disabled = cursors.length === 1;
  $("page-info").textContent = `page ${cursors.length}, ${page.total} ${state} in all`;
}

async function renderDetail(id) {
  const job = await call(`/api/jobs/${encodeURIComponent(id)}`);
  const { topic, course } = await lecture(lectureOf(job.id));
  $("detail-title").textContent = `${topic}${chunkOf(job.id)} (${course})`;
  const facts = [["Lecture", job.id], ["State", job.state], ["Attempts", `${job.attempts} of ${job.maxAttempts}`],
    ["Progress", `${job.progress}%`], ["Worker", job.worker || "none"], ["Created", job.createdAt],
    ["Started", job.startedAt || "not yet"], ["Finished", job.finishedAt || "not yet"], ["Last error", job.lastError || "none"]];
  $("detail-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  $("attempts").replaceChildren(...(job.errors.length
    ? job.errors.map((a) => el("tr", {}, el("td", {}, a.attempt), el("td", {}, a.at), el("td", {}, a.worker || ""), el("td", { class: "error-text" }, a.error)))
    : [el("tr", {}, el("td", { colspan: 4 }, "No failed attempt."))]));
  const remove = el("button", { type: "button", class: "danger", onclick: async () => {
    if (!confirm(`Delete the lecture “${topic}” and its video? This cannot be undone.`)) return;
    try {
      await call(`/api/lectures/${job.id}`, { method: "DELETE" });
      lectures.delete(job.id);
      location.hash = "";
    } catch { /* shown */ }
  } }, "Delete the lecture");
  $("detail-actions").replaceChildren(...actions(job), remove);
}

let shownLecture = null;
async function refresh() {
  if (!$("login").hidden) return;
  const hash = new URLSearchParams(location.hash.slice(1));
  const job = hash.get("job");
  const courseId = hash.get("course");
  $("list-view").hidden = !!(job || courseId);
  $("detail-view").hidden = !job;
  $("course-view").hidden = !courseId;
  try {
    await renderCounts();
    if (job) {
      await renderDetail(job);
      if (shownLecture !== job) {
        shownLecture = job;
        const thumb = `/api/lectures/${encodeURIComponent(job)}/thumbnail.jpg`;
        $("thumbnail").hidden = false;
        $("thumbnail").src = thumb;
        $("thumbnail").onerror = () => { $("thumbnail").hidden = true; };
        vidpipe.showLecture(job, $("detail-lecture"));
      }
    } else if (courseId) {
      const page = await call(`/api/lectures?${new URLSearchParams({ courseId, limit: "100" })}`);
      $("course-title").textContent = `Course ${courseId}: ${page.total} lectures`;
      $("course-lectures").replaceChildren(...page.lectures.map((l) => el("tr", {},
        el("td", {}, el("a", { href: `#job=${l._id}` }, l._id.slice(0, 12) + "…")),
        el("td", {}, l.nameOfTopic), el("td", {}, l.processingStatus), el("td", {}, l.createdAt))));
    } else {
      await renderJobs();
    }
  } catch { /* shown */ }
}

function start() {
  $("login").hidden = true;
  $("dashboard").hidden = false;
  $("sign-out").hidden = !vidpipe.key();
  refresh();
}

$("tabs").replaceChildren(...STATES.map((s) => el("button", {
  type: "button", class: "secondary", "data-state": s, "aria-pressed": s === state,
  onclick: (e) => {
    state = s;
    cursors = [null];
    for (const b of $("tabs").children) b.setAttribute("aria-pressed", b.dataset.state === s);
    refresh();
  },
}, s)));
$("next").addEventListener("click", () => { cursors.push($("next").dataset.cursor); refresh(); });
$("first").addEventListener("click", () => { cursors = [null]; refresh(); });
$("pause").addEventListener("click", () => act("/api/queue/pause"));
$("resume").addEventListener("click", () => act("/api/queue/resume"));
$("retry-all").addEventListener("click", async () => {
  try {
    const done = await call("/api/queue/retry-failed", { method: "POST" });
    showError("");
    const gone = done.sourceGone.length ? `; ${done.sourceGone.length} left failed, their upload is no longer kept` : "";
    $("notice").textContent = `${done.retried.length} failed jobs sent back to the queue${gone}.`;
  } catch { /* shown */ }
  refresh();
});
$("clean").addEventListener("click", async () => {
  const days = Number($("clean-days").value);
  if (!(days >= 0)) return showError("Give the age in days, 0 or more.");
  if (!confirm(`Remove the records of completed, failed and cancelled jobs that ended over ${days} days ago? Lectures keep their outcome.`)) return;
  const seconds = Math.round(days * 86400);
  try {
    const done = await call("/api/queue/clean", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ completedOlderThan: seconds, failedOlderThan: seconds }),
    });
    showError("");
    $("notice").textContent = `Removed ${done.completed} completed and ${done.failed} failed or cancelled job records.`;
  } catch { /* shown */ }
  refresh();
});
$("search").addEventListener("submit", (e) => {
  e.preventDefault();
  const q = $("query").value.trim();
  if (!q) return;
  location.hash = /^[0-9a-f]{32}$/i.test(q) ? `job=${q.toLowerCase()}` : `course=${encodeURIComponent(q)}`;
});
$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  vidpipe.setKey($("key").value.trim());
  $("key").value = "";
  start();
});
$("sign-out").addEventListener("click", () => {
  vidpipe.setKey(null);
  location.reload();
});
window.addEventListener("hashchange", refresh);
setInterval(refresh, 2000);
start();
