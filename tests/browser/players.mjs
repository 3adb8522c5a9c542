// Plays one HLS master playlist in a real web player in headless Chromium
// and prints what a viewer would have seen, as one JSON line on stdout.
// tests/players/matrix.rs runs it for every cell of its matrix and asserts on
// the report; this script only watches and reports.
//
//   node players.mjs '{"master": URL, "player": "hls"|"shaka", "seek": true, "follow": SECONDS, "duration": D, "screenshot": PATH}'
//
// `seek`: seek to the middle and play from there. `captions`: a language
// whose captions to turn on; the report lists the text tracks and, after
// the seek, the text of the cues showing. `follow`: after the checks,
// keep playing up to SECONDS until the playlist turns VOD and the element has
// the whole `duration`, then play on.
//
// The page comes from a server of this script on its own loopback port, so
// every request the player makes to vidpipe or to the bucket is a real
// cross-origin request and needs real CORS headers, as on a course site.

import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const options = JSON.parse(process.argv[2]);
const libraries = {
  hls: path.join(here, "node_modules/hls.js/dist/hls.min.js"),
  shaka: path.join(here, "node_modules/shaka-player/dist/shaka-player.compiled.js"),
};
const library = libraries[options.player];
if (!library) throw new Error(`unknown player ${options.player}`);

// The page: a muted video element (autoplay is allowed muted) and a small
// adapter that gives both players the same four verbs.
const page_html = `<!doctype html>
<meta charset="utf-8"><title>${options.player}</title>
<video id="v" muted playsinline width="640" height="360" controls></video>
<script src="/player.js"></script>
<script>
const video = document.getElementById("v");
window.errors = [];
window.adapter = ${options.player === "hls" ? "hlsAdapter()" : "shakaAdapter()"};

function hlsAdapter() {
  const hls = new Hls();
  hls.on(Hls.Events.ERROR, (_, d) => window.errors.push({ fatal: !!d.fatal, detail: d.type + "/" + d.details }));
  return {
    load: (url) => new Promise((resolve) => {
      hls.once(Hls.Events.MANIFEST_PARSED, () => resolve());
      hls.loadSource(url);
      hls.attachMedia(video);
    }),
    heights: () => hls.levels.map((l) => l.height),
    live: () => !!(hls.levels[hls.currentLevel >= 0 ? hls.currentLevel : 0]?.details?.live),
    switchToTop: () => { hls.currentLevel = hls.levels.length - 1; return hls.levels[hls.levels.length - 1].height; },
    playingHeight: () => hls.levels[hls.currentLevel]?.height ?? null,
    textLanguages: () => hls.subtitleTracks.map((t) => t.lang),
    showText: (lang) => { hls.subtitleDisplay = true; hls.subtitleTrack = hls.subtitleTracks.findIndex((t) => t.lang === lang); },
  };
}

// The text of every cue showing now, whichever player put it there.
function showingCues() {
  return Array.from(video.textTracks)
    .filter((t) => t.mode === "showing")
    .flatMap((t) => Array.from(t.activeCues || []).map((c) => c.text));
}

function shakaAdapter() {
  shaka.polyfill.installAll();
  const player = new shaka.Player();
  player.addEventListener("error", (e) => window.errors.push({ fatal: e.detail.severity === 2, detail: "shaka " + e.detail.code }));
  const variants = () => player.getVariantTracks().sort((a, b) => a.bandwidth - b.bandwidth);
  return {
    load: async (url) => { await player.attach(video); await player.load(url); },
    heights: () => [...new Set(variants().map((t) => t.height))],
    // An EVENT playlist is "in progress" for Shaka (finite, still growing), not "live".
    live: () => player.isLive() || player.isInProgress(),
    switchToTop: () => {
      player.configure({ abr: { enabled: false } });
      const top = variants().at(-1);
      player.selectVariantTrack(top, /* clearBuffer */ true);
      return top.height;
    },
    playingHeight: () => player.getVariantTracks().find((t) => t.active)?.height ?? null,
    textLanguages: () => player.getTextTracks().map((t) => t.language),
    // Shaka 5: selecting a text track shows it.
    showText: (lang) => player.selectTextTrack(player.getTextTracks().find((t) => t.language === lang)),
  };
}
</script>`;

const server = http.createServer((req, res) => {
  if (req.url === "/") {
    res.writeHead(200, { "content-type": "text/html" }).end(page_html);
  } else if (req.url === "/player.js") {
    res.writeHead(200, { "content-type": "text/javascript" }).end(fs.readFileSync(library));
  } else if (req.url === "/favicon.ico") {
    res.writeHead(204).end();
  } else {
    res.writeHead(404).end();
  }
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const origin = `http://127.0.0.1:${server.address().port}`;

const browser = await chromium.launch({
  executablePath: process.env.VIDPIPE_TEST_CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
  ],
});
const report = { origin, player: options.player, errors: [], console: [] };
// Whatever hangs (a load that never settles), the report still comes out.
const watchdog = setTimeout(() => {
  console.log(JSON.stringify({ ...report, ok: false, failure: "the player run hung" }));
  process.exit(1);
}, 100_000 + (options.follow ?? 0) * 1000);
try {
  const page = await browser.newPage();
  page.on("console", (m) => { if (m.type() === "error") report.console.push(m.text().slice(0, 300)); });
  page.on("requestfailed", (r) => report.console.push(`request failed: ${r.url().split("?")[0]} ${r.failure()?.errorText}`));
  await page.goto(origin + "/");

  const currentTime = () => page.evaluate(() => video.currentTime);
  // Polls `check` (run in the page) until it is truthy, or the deadline.
  const until = async (what, check, arg, seconds = 30) => {
    const deadline = Date.now() + seconds * 1000;
    for (;;) {
      const value = await page.evaluate(check, arg);
      if (value) return value;
      const fatal = await page.evaluate(() => window.errors.find((e) => e.fatal));
      if (fatal) throw new Error(`${what}: fatal player error ${fatal.detail}`);
      if (Date.now() > deadline) throw new Error(`${what}: not within ${seconds}s (currentTime ${await currentTime()})`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  await page.evaluate((url) => window.adapter.load(url), options.master);
  report.heights = await page.evaluate(() => window.adapter.heights());
  if (options.captions) {
    report.textLanguages = await page.evaluate(() => window.adapter.textLanguages());
    await page.evaluate((lang) => window.adapter.showText(lang), options.captions);
  }
  // play() settles only once media plays: not awaited, `until` watches.
  await page.evaluate(() => { video.play().catch((e) => window.errors.push({ fatal: false, detail: "play(): " + e })); });
  // Where playback really began: the first time the clock moves.
  report.start = await until("playback starts", () => (video.currentTime > 0 && !video.paused ? video.currentTime : 0), null);
  report.live = await page.evaluate(() => window.adapter.live());
  report.seekable = await page.evaluate(() => video.seekable.length ? [video.seekable.start(0), video.seekable.end(0)] : []);
  report.advancedTo = await until("plays 2 s", (t) => (video.currentTime > t ? video.currentTime : 0), report.start + 2.2);

  report.topHeight = await page.evaluate(() => window.adapter.switchToTop());
  await until("switches to the top level", (h) => window.adapter.playingHeight() === h, report.topHeight);
  const afterSwitch = await currentTime();
  report.playedOnTopTo = await until("plays on after the switch", (t) => (video.currentTime > t ? video.currentTime : 0), afterSwitch + 1.5);
  report.playingHeight = await page.evaluate(() => window.adapter.playingHeight());

  if (options.screenshot) await page.screenshot({ path: options.screenshot });
  if (options.seek) {
    report.duration = await page.evaluate(() => video.duration);
    const middle = report.duration / 2;
    await page.evaluate((t) => { video.currentTime = t; }, middle);
    report.seekedTo = middle;
    report.playedFromMiddleTo = await until("plays from the middle", (t) => (video.currentTime > t ? video.currentTime : 0), middle + 1.5);
    if (options.captions) {
      report.cueText = await until("a caption shows", () => showingCues().join(" | "), null, 10);
      report.cueShownAt = await currentTime();
    }
  }
  if (options.follow) {
    // Keep playing while the lecture finishes: the playlists turn VOD
    // (ENDLIST) under the player, which must take the end and play on.
    report.checkedAtMs = Date.now();
    // VOD: no longer live, and the whole `duration` known to the element.
    await until("the playlist turns VOD", () => !window.adapter.live(), null, options.follow);
    report.vodAtMs = Date.now();
    // The element's duration once it settles (or after 10 s): the test
    // decides what it must be.
    try {
      await until("the element gets the whole duration", (d) => Math.abs(video.duration - d) < 1, options.duration, 10);
    } catch { /* reported below */ }
    report.vodDuration = await page.evaluate(() => video.duration);
    const at = await currentTime();
    report.playedAfterVodTo = await until("plays on after the switch to VOD", (t) => (video.currentTime > t ? video.currentTime : 0), at + 1);
  }
  report.ok = true;
} catch (e) {
  report.ok = false;
  report.failure = String(e.message || e).split("\n")[0];
  // What the element held when it gave up: enough to tell a starved
  // player (data buffered, clock still) from a stuck one (nothing ahead).
  try {
    report.element = await (await browser.contexts()[0]?.pages()[0])?.evaluate(() => ({
      readyState: video.readyState,
      paused: video.paused,
      currentTime: video.currentTime,
      buffered: Array.from({ length: video.buffered.length }, (_, i) => [video.buffered.start(i), video.buffered.end(i)]),
    }));
  } catch { /* the page is gone */ }
} finally {
  try {
    report.errors = await (await browser.contexts()[0]?.pages()[0])?.evaluate(() => window.errors) ?? [];
  } catch { /* the page is gone */ }
  await browser.close();
  server.close();
  clearTimeout(watchdog);
}
console.log(JSON.stringify(report));
