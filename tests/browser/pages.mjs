// Drives vidpipe's own pages in headless Chromium as a person would and
// prints what they saw, as one JSON line. tests/players/pages.rs runs it and
// asserts on the report; this script only acts and watches.
//
//   node pages.mjs '{"base": URL, "mode": "upload"|"resume"|"dashboard", ...}'
//
// upload:    {file, course, topic}: the upload page, then its player.
// resume:    {file, course, topic, cutAt}: the upload is cut when `cutAt` of
//            it was sent (the page is closed), then the page is opened again
//            and the same file chosen: where does the upload go on from?
// dashboard: {key, lecture}: signs in to /admin with the queue paused,
//            finds `lecture` waiting, opens its page, resumes the queue and
//            watches its states; a failed one is retried with its button.
import { chromium } from "playwright-core";

const options = JSON.parse(process.argv[2]);
const report = { mode: options.mode, console: [], errors: [], alerts: [] };
const browser = await chromium.launch({
  executablePath: process.env.VIDPIPE_TEST_CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--autoplay-policy=no-user-gesture-required"],
});
const watchdog = setTimeout(() => {
  console.log(JSON.stringify({ ...report, ok: false, failure: "the page run hung" }));
  process.exit(1);
}, (options.timeout ?? 150) * 1000);

const context = await browser.newContext();
async function open(path) {
  const page = await context.newPage();
  page.on("console", (m) => { if (m.type() === "error") report.console.push(m.text().slice(0, 300)); });
  page.on("pageerror", (e) => report.errors.push(String(e).slice(0, 300)));
  // A confirm is the person saying yes; an alert is a topic that ran.
  page.on("dialog", (d) => {
    if (d.type() === "confirm") return d.accept();
    report.alerts.push(d.message());
    return d.dismiss();
  });
  await page.goto(options.base + path);
  return page;
}

// Polls `check` in the page until it is truthy, or the deadline.
// Saves what the page shows now as `name`.png, for the README.
async function shot(page, name) {
  if (options.shots) await page.screenshot({ path: `${options.shots}/${name}.png`, fullPage: true });
}

async function until(page, what, check, arg, seconds = 60) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const value = await page.evaluate(check, arg);
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${seconds}s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function fillAndUpload(page) {
  await page.fill("#course", options.course);
  await page.fill("#topic", options.topic);
  await page.setInputFiles("#file", options.file);
  await page.click("#start");
}

// A slow uplink, so an upload can be seen (and cut) midway.
async function throttle(page) {
  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 20, downloadThroughput: -1, uploadThroughput: options.uploadBytesPerSecond });
}

async function uploadAndPlay() {
  const page = await open("/");
  await throttle(page);
  await fillAndUpload(page);
  // Progress as a person sees it: the bar and its text.
  report.progressText = await until(page, "progress shows", () => {
    const text = document.getElementById("bytes").textContent;
    const sent = document.getElementById("bar").value;
    return !document.getElementById("progress-box").hidden && sent > 20 && /of .* left/.test(text) ? text : null;
  });
  await shot(page, "upload-progress");
  // Back to full speed: the rest of the test is about playing.
  await (await context.newCDPSession(page)).send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
  await until(page, "the lecture shows", () => !document.getElementById("lecture").hidden);
  report.start = await until(page, "the video plays", () => {
    const v = document.querySelector("#lecture video");
    return v.currentTime > 0 && !v.paused ? v.currentTime : 0;
  }, null, 120);
  report.statusWhilePlaying = await page.textContent("#lecture [data-part=status]");
  await shot(page, "upload-playing");
  report.advancedTo = await until(page, "the clock advances", (t) => {
    const v = document.querySelector("#lecture video");
    return v.currentTime > t ? v.currentTime : 0;
  }, report.start + 2);
  report.qualities = await page.$$eval("#lecture [data-part=quality] option", (o) => o.map((x) => x.textContent));
  report.title = await page.textContent("#lecture [data-part=title]");
  report.scriptsInTitle = await page.$$eval("#lecture [data-part=title] *", (n) => n.length);
  report.pwned = await page.evaluate(() => window.pwned === 1);
  report.watchLink = await page.getAttribute("#watch-link", "href");
  // The watch page of the same lecture: title as text, poster, player.
  const watch = await open(report.watchLink);
  report.watchTitle = await until(watch, "the watch page has the title", () => {
    const t = document.querySelector("[data-part=title]").textContent;
    return t !== "Loading…" ? t : null;
  });
  report.watchStatus = await until(watch, "the watch page says completed", () =>
    document.getElementById("lecture").dataset.status === "completed" ? document.querySelector("[data-part=status]").textContent : null, null, 120);
  report.poster = await watch.evaluate(() => document.querySelector("video").poster);
  report.watchPlayed = await until(watch, "the watch page plays", () => {
    const v = document.querySelector("video");
    return v.currentTime > 1 ? v.currentTime : 0;
  });
  await shot(watch, "watch");
}

async function cutAndResume() {
  let page = await open("/");
  await throttle(page);
  await fillAndUpload(page);
  report.cutAtPercent = await until(page, "half is sent", (at) => {
    const v = document.getElementById("bar").value;
    return v >= at ? v : 0;
  }, options.cutAt * 100);
  await page.close();
  // The person comes back and chooses the same file: a new page, same browser.
  page = await open("/");
  const patches = [];
  page.on("request", (r) => {
    if (r.method() === "PATCH") patches.push(Number(r.headers()["upload-offset"]));
  });
  page.on("request", (r) => {
    if (r.method() === "HEAD") report.asked = true;
  });
  await fillAndUpload(page);
  await until(page, "the lecture shows", () => !document.getElementById("lecture").hidden, null, 120);
  report.resumedPatchOffsets = patches;
  report.lectureLink = await page.getAttribute("#watch-link", "href");
}

async function dashboard() {
  const page = await open("/admin");
  await page.evaluate(() => { window.sameDocument = true; });
  report.loginShown = await until(page, "the sign-in form shows", () => !document.getElementById("login").hidden);
  report.refusal = await page.textContent("#error");
  await page.fill("#key", options.key);
  await page.click("#login button[type=submit]");
  await until(page, "the dashboard shows", () => !document.getElementById("dashboard").hidden);
  report.pausedText = await until(page, "the paused flag shows", () => {
    const t = document.getElementById("paused-state").textContent;
    return t.includes("paused") ? t : null;
  });
  // The queue is paused: the lecture waits, in the waiting list.
  report.listed = await until(page, "the waiting list has the job", (id) =>
    document.querySelector(`#jobs tr[data-job="${id}"]`)?.dataset.state, options.lecture);
  report.rowText = await page.textContent(`#jobs tr[data-job="${options.lecture}"]`);
  report.rowImages = await page.$$eval(`#jobs tr[data-job="${options.lecture}"] img`, (i) => i.length);
  await shot(page, "dashboard");
  await page.fill("#query", options.lecture);
  await page.click("#search button");
  const state = () => {
    const facts = [...document.querySelectorAll("#detail-facts dt")];
    const dt = facts.find((d) => d.textContent === "State");
    return document.getElementById("detail-view").hidden ? null : dt?.nextElementSibling.textContent;
  };
  await until(page, "the job's page shows", state);
  await page.click("#resume");
  // Each state the job's page shows, as the page refreshes itself.
  const seen = [];
  const deadline = Date.now() + (options.watchSeconds ?? 120) * 1000;
  while (Date.now() < deadline) {
    const now = await page.evaluate(state);
    if (now && seen.at(-1) !== now) seen.push(now);
    if (now === "failed" && !report.retried) {
      await page.click("#detail-actions button:text('Retry')");
      report.retried = true;
    }
    if (now === "completed") break;
    await new Promise((r) => setTimeout(r, 100));
  }
  report.seen = seen;
  report.attemptsShown = await page.$$eval("#attempts tr", (rows) => rows.map((r) => r.textContent));
  await shot(page, "job-detail");
  report.sameDocument = await page.evaluate(() => window.sameDocument === true);
  // Clean every finished record: the completed job's goes.
  await page.fill("#clean-days", "0");
  await page.click("#clean");
  report.cleanText = await until(page, "the clean is reported", () => {
    const t = document.getElementById("notice").textContent;
    return t.startsWith("Removed") ? t : null;
  });
}

try {
  if (options.mode === "upload") await uploadAndPlay();
  else if (options.mode === "resume") await cutAndResume();
  else if (options.mode === "dashboard") await dashboard();
  else throw new Error(`unknown mode ${options.mode}`);
  report.ok = true;
} catch (e) {
  report.ok = false;
  report.failure = String(e.message || e).split("\n")[0];
} finally {
  await browser.close();
  clearTimeout(watchdog);
}
console.log(JSON.stringify(report));
