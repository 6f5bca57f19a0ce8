// The livestream page: go live from this browser (broadcaster.js: H.264 and Opus encoded here
// with WebCodecs where the browser and the server can, else the seed protocol's JPEG and PCM;
// binary STREAM forms, resumed after a dropped connection), watch live sessions (viewer.js:
// their HLS, /live/<name>/index.m3u8), and play or delete recordings; api.js holds the token and the calls to
// the daemon. No build step. `?codec=jpeg` in the page's URL sends JPEG and PCM whatever the
// browser can; `?audio=pcm` sends PCM with H.264.

import {
  allowed,
  api,
  forgetToken,
  hasToken,
  loadConfig,
  loadToken,
  recordingProtocols,
  socketUrl,
  useToken,
  whenRefused,
  withToken,
} from "./api.js";
import { Broadcaster } from "./broadcaster.js";
import { linkedRecording, Viewer, watchLink } from "./viewer.js";

const $ = (selector) => document.querySelector(selector);

const state = { fps: 15, resumeGrace: 0, broadcaster: null, viewer: null, force: {} };

/** What the page's URL asks to send: `?codec=jpeg` (JPEG and PCM), `?audio=pcm`. */
function forced() {
  const params = new URLSearchParams(location.search);
  const force = {};
  if (params.get("codec") === "jpeg") force.video = "jpeg";
  if (params.get("audio") === "pcm") force.audio = "pcm";
  return force;
}

/** Say what the page sends (and why not H.264, when it does not). */
function showPath(broadcaster) {
  const path = $("#live-path");
  path.hidden = false;
  path.dataset.video = broadcaster.videoCodec;
  path.dataset.audio = broadcaster.audioCodec;
  path.textContent = `Sending ${broadcaster.describe()}` + (broadcaster.why ? `: ${broadcaster.why}.` : ".");
}

// --- tokens -------------------------------------------------------------------------------------

function askForToken(message) {
  $("#auth").hidden = false;
  $("#auth-message").textContent = message || "";
}

// --- formatting ---------------------------------------------------------------------------------

function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const hours = Math.floor(s / 3600);
  const mmss = `${String(Math.floor(s / 60) % 60).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
  return hours ? `${hours}:${mmss}` : mmss;
}

function bytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let value = n;
  let unit = -1;
  do {
    value /= 1024;
    unit++;
  } while (value >= 1024 && unit < units.length - 1);
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

const when = (iso) => new Date(iso).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== null && value !== undefined) node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

// --- going live ---------------------------------------------------------------------------------

function liveStatus(kind, text, detail = "") {
  const status = $("#live-status");
  status.dataset.state = kind;
  status.replaceChildren(text);
  if (detail) status.append(element("span", { class: "detail" }, detail));
  status.classList.toggle("error", kind === "error");
}

// What the capture could not keep for the server (only after long or many connection losses).
function losses(broadcaster) {
  const { droppedFrames, droppedAudioMs } = broadcaster.outbox;
  const lost = [];
  if (droppedFrames) lost.push(`${droppedFrames} frames`);
  if (droppedAudioMs) lost.push(`${(droppedAudioMs / 1000).toFixed(1)} s of audio`);
  return lost.length ? ` ${lost.join(" and ")} could not be kept while the connection was down.` : "";
}

function showLive(broadcaster) {
  const elapsed = clock(broadcaster.elapsed());
  $("#live-status").dataset.resumes = broadcaster.resumes;
  if (broadcaster.reconnecting) {
    const left = Math.max(0, state.resumeGrace - (performance.now() - broadcaster.lostAt) / 1000);
    liveStatus("reconnecting", `Reconnecting… ${elapsed}`,
      `The connection dropped. Still recording here; ${broadcaster.buffered().toFixed(1)} s is ` +
      `waiting to be sent. The server keeps the recording open ${Math.ceil(left)} s more.` +
      losses(broadcaster));
  } else {
    const note = [broadcaster.lastError, losses(broadcaster)].filter(Boolean).join(" ");
    liveStatus("recording", `Recording ${broadcaster.name} · ${elapsed}`, note);
  }
}

async function goLive(event) {
  event.preventDefault();
  $("#go").disabled = true;
  $("#finished").replaceChildren();
  $("#live-path").hidden = true;
  const broadcaster = new Broadcaster({
    fps: state.fps,
    grace: state.resumeGrace,
    url: socketUrl("/"),
    protocols: recordingProtocols(),
    preview: $("#preview"),
    force: state.force,
    onStatus: liveStatus,
    onError: (message) => (broadcaster.lastError = `${message.code}: ${message.message}`),
  });
  state.broadcaster = broadcaster;
  try {
    await broadcaster.start($("#client-id").value.trim() || "browser");
  } catch (error) {
    await broadcaster.stop();
    liveStatus("error", error.message);
    resetGoLive();
    return;
  }
  $("#go").hidden = true;
  $("#stop").hidden = false;
  showPath(broadcaster);
  showLive(broadcaster);
  broadcaster.clockTimer = setInterval(() => showLive(broadcaster), 250);
  broadcaster.ended.then(async (outcome) => {
    if (broadcaster.stopping) return; // Stop shows the end
    const seconds = broadcaster.elapsed();
    await broadcaster.stop();
    await showEnd(broadcaster, outcome, seconds);
  });
}

async function stopLive() {
  const broadcaster = state.broadcaster;
  clearInterval(broadcaster.clockTimer);
  $("#stop").disabled = true;
  const seconds = broadcaster.elapsed();
  const finishing = () =>
    broadcaster.reconnecting
      ? liveStatus("reconnecting", "Finishing: reconnecting…",
        `${broadcaster.buffered().toFixed(1)} s of the recording wait to be sent.`)
      : liveStatus("finishing", "Finishing the recording…");
  finishing();
  const waiting = setInterval(finishing, 250);
  const outcome = await broadcaster.stop();
  clearInterval(waiting);
  await showEnd(broadcaster, outcome, seconds);
}

/** How the broadcast ended, and what it left: the files, or where to look for them. */
async function showEnd(broadcaster, outcome, seconds) {
  clearInterval(broadcaster.clockTimer);
  resetGoLive();
  Object.assign($("#live-status").dataset, {
    seconds: seconds.toFixed(3),
    frames: broadcaster.frames,
    skipped: broadcaster.skipped,
    audioBytes: broadcaster.audioBytes,
    audioChunks: broadcaster.outbox.next.audio,
    resumes: broadcaster.resumes,
    resent: broadcaster.resent,
    droppedFrames: broadcaster.outbox.droppedFrames,
    droppedAudioMs: Math.round(broadcaster.outbox.droppedAudioMs),
    videoCodec: broadcaster.videoCodec ?? "",
    audioCodec: broadcaster.audioCodec ?? "",
    keyframeRequests: JSON.stringify(broadcaster.keyframeRequests),
    serverErrors: JSON.stringify(broadcaster.serverErrors),
    opusHeadChecked: String(broadcaster.opusHeadChecked),
  });
  const resumed = broadcaster.resumes
    ? `The connection dropped and was resumed ${broadcaster.resumes}×.${losses(broadcaster)}`
    : "";
  if (outcome?.kind === "closed") {
    liveStatus("done", `Recorded ${clock(seconds)}: ${broadcaster.frames} frames.`, resumed);
    $("#finished").replaceChildren(finishedCard(outcome.recordings));
  } else if (outcome) {
    const why = outcome.kind === "expired"
      ? `The connection was lost and the recording could not be resumed (${outcome.reason})`
      : `The connection ended (${outcome.code}${outcome.reason ? ` ${outcome.reason}` : ""})`;
    liveStatus("ended", `The recording ended after ${clock(seconds)}.`, `${why}. Looking for what was saved…`);
    const recordings = await savedFiles(broadcaster.name);
    const saved = recordings
      ? "What reached the server was saved:"
      : "What reached the server is in the list below once the server has finished it.";
    liveStatus("ended", `The recording ended after ${clock(seconds)}.`, `${why}. ${saved}`);
    if (recordings) $("#finished").replaceChildren(finishedCard(recordings));
  } else {
    liveStatus("error", "The server did not confirm the recording; see the list below.");
  }
  refreshRecordings();
}

/** The files of recording ``name`` once the server has finished them (a dropped session is
 * finished when its grace period is over), each looked up by its own name; null when there is
 * none or they cannot be looked up. */
async function savedFiles(name) {
  try {
    for (let tries = 0; tries < 40; tries++) {
      const response = await api("/api/sessions");
      if (!response.ok) return null;
      const { sessions } = await response.json();
      if (!sessions.some((session) => session.recording === name)) break;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    const [video, audio] = await Promise.all(["video", "audio"].map((kind) => recordingEntry(kind, name)));
    if (!video && !audio) return null;
    return { video: video?.name ?? null, audio: audio?.name ?? null };
  } catch {
    return null;
  }
}

function resetGoLive() {
  $("#go").hidden = false;
  $("#go").disabled = false;
  $("#stop").hidden = true;
  $("#stop").disabled = false;
}

function finishedCard(recordings) {
  const media = element("div", { class: "media" });
  if (recordings.video) {
    const src = withToken(`/recordings/video/${encodeURIComponent(recordings.video)}`);
    media.append(element("video", { controls: "", playsinline: "", preload: "metadata", src }));
  }
  if (recordings.audio) {
    const src = withToken(`/recordings/audio/${encodeURIComponent(recordings.audio)}`);
    media.append(element("audio", { controls: "", preload: "metadata", src }));
  }
  const names = [recordings.video, recordings.audio].filter(Boolean).join(" and ");
  const attributes = { id: "finished-recording", "data-video": recordings.video, "data-audio": recordings.audio };
  return element("div", attributes, element("p", {}, `Saved ${names}.`), media);
}

// --- watching -----------------------------------------------------------------------------------

function watch(name) {
  state.viewer?.close();
  state.viewer = new Viewer(name, $("#viewer"), () => {
    refreshRecordings();
    refreshSessions();
  });
  state.viewer.start();
  history.replaceState(null, "", watchLink(name));
}

function closeViewer() {
  state.viewer?.close();
  state.viewer = null;
  history.replaceState(null, "", location.pathname);
}

async function refreshSessions() {
  const list = $("#sessions");
  let sessions;
  try {
    const response = await api("/api/sessions");
    if (!response.ok) throw new Error(`${response.status}`);
    sessions = (await response.json()).sessions;
  } catch (error) {
    list.replaceChildren(element("li", { class: "empty" }, `Cannot list sessions (${error.message}).`));
    return;
  }
  if (sessions.length === 0) {
    list.replaceChildren(element("li", { class: "empty" }, "Nobody is live."));
    return;
  }
  list.replaceChildren(
    ...sessions.map((session) =>
      element(
        "li",
        { "data-recording": session.recording },
        element(
          "div",
          { class: "row" },
          element("div", {},
            element("div", { class: "name" }, session.recording),
            element("div", { class: "meta" },
              `${session.frames} frames · ${bytes(session.bytes)} · since ${when(session.since)}`)),
          element("button", { type: "button", class: "watch", onclick: () => watch(session.recording) },
            "Watch"),
        ),
      ),
    ),
  );
}

// --- recordings ---------------------------------------------------------------------------------

// The list asks for this many files at a time (`/api/recordings?limit=`), newest first.
const PAGE_SIZE = 50;
// How long the client box waits for typing to stop before it asks again.
const FILTER_DELAY_MS = 300;
const SUFFIXES = { video: ".mp4", audio: ".wav" };

const firstPage = () => ({ cursor: null, offset: 0, shown: null });

const listing = {
  // The filters as last applied: a page's cursor is good only with the filters it came with.
  filters: {},
  // The pages turned, newest first; the last one is shown. Each: the cursor it is fetched with
  // (null for the first), how many files come before it, and the session whose files the page
  // before it showed whole (see fetchPage), left out here.
  pages: [firstPage()],
  following: null, // the page after the one shown, once it is known to be there
  loads: 0, // only the latest request's answer is shown
  typing: null,
};

function stemOf(name) {
  return name.replace(/\.(mp4|wav)$/, "");
}

/** One file's entry (`/api/recordings/<kind>/<file>`), or null if there is no such file. */
async function recordingEntry(kind, name) {
  const response = await api(`/api/recordings/${kind}/${encodeURIComponent(name + SUFFIXES[kind])}`);
  if (response.status === 404) return null;
  if (!response.ok) throw new Error(`${response.status}`);
  return response.json();
}

class Unlisted extends Error {}

/** A page of files, the total matching the filters, and the page after it (null if none). */
async function fetchPage(page) {
  const query = new URLSearchParams({ ...listing.filters, limit: PAGE_SIZE });
  if (page.cursor) query.set("cursor", page.cursor);
  const response = await api(`/api/recordings?${query}`);
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    // A 400 says what is wrong with the query (the client box's text, say).
    throw new Unlisted(answer.message
      ? `Cannot list recordings: ${answer.message}`
      : `Cannot list recordings (${response.status}).`);
  }
  const files = answer.recordings.filter((file) => stemOf(file.name) !== page.shown);
  // A session's video and audio are two files, side by side in the list (they began at the
  // same time), so a page may end between them. Its last session then gets its other file
  // here, and the next page leaves that session out.
  let shown = null;
  const last = answer.recordings.at(-1);
  if (answer.next && !listing.filters.kind && last && stemOf(last.name) !== page.shown) {
    const stem = stemOf(last.name);
    if (files.filter((file) => stemOf(file.name) === stem).length === 1) {
      const other = await recordingEntry(last.kind === "video" ? "audio" : "video", stem).catch(() => null);
      if (other) {
        files.push(other);
        shown = stem;
      }
    }
  }
  const offset = page.offset + answer.recordings.length;
  // Nothing after this page but the file it took from the next: no next page.
  const more = answer.next && !(shown && offset + 1 >= answer.total);
  return { files, total: answer.total, following: more ? { cursor: answer.next, offset, shown } : null };
}

/** The page shown, asked for again: after the library changed, a token was given, a page was
 * turned or the filters changed. */
async function refreshRecordings() {
  const load = ++listing.loads;
  const list = $("#recording-list");
  const section = $("#recordings");
  section.dataset.state = "loading";
  listing.following = null;
  $("#older").disabled = true;
  $("#newer").disabled = true;
  let found;
  try {
    found = await fetchPage(listing.pages.at(-1));
  } catch (error) {
    if (load !== listing.loads) return;
    const message = error instanceof Unlisted ? error.message : `Cannot list recordings (${error.message}).`;
    list.replaceChildren(element("li", { class: "empty error" }, message));
    $("#recording-total").textContent = "";
    delete section.dataset.total;
    showPages();
    section.dataset.state = "error";
    return;
  }
  if (load !== listing.loads) return;
  if (found.files.length === 0 && listing.pages.length > 1) {
    listing.pages.pop(); // its last recordings were deleted: the page before it
    return refreshRecordings();
  }
  listing.following = found.following;
  section.dataset.total = found.total;
  $("#recording-total").textContent = `${found.total} recording${found.total === 1 ? "" : "s"}`;
  showPages();
  section.dataset.state = "ready";
  // The video and audio of one session share a stem: one entry each, newest first (as listed).
  const byStem = new Map();
  for (const recording of found.files) {
    const stem = stemOf(recording.name);
    if (!byStem.has(stem)) byStem.set(stem, []);
    byStem.get(stem).push(recording);
  }
  if (byStem.size === 0) {
    const filtered = Object.keys(listing.filters).length > 0;
    list.replaceChildren(element("li", { class: "empty" }, filtered ? "No recordings match." : "No recordings yet."));
    return;
  }
  list.replaceChildren(...[...byStem].map(([stem, files]) => recordingItem(stem, files)));
}

function showPages() {
  const turned = listing.pages.length > 1;
  $("#recording-pages").hidden = !turned && !listing.following;
  $("#newer").disabled = !turned;
  $("#older").disabled = !listing.following;
}

function turnPage(older) {
  if (older && listing.following) listing.pages.push(listing.following);
  else if (!older && listing.pages.length > 1) listing.pages.pop();
  else return;
  // Turned from the buttons below the list: its top, once the page is there.
  refreshRecordings().then(() => {
    if ($("#recordings").getBoundingClientRect().top < 0) $("#recordings").scrollIntoView();
  });
}

/** What the filter box asks for: `client_prefix` (the client id as typed) and `kind`. */
function filtersShown() {
  const filters = {};
  const client = $("#filter-client").value.trim();
  if (client) filters.client_prefix = client;
  if ($("#filter-kind").value) filters.kind = $("#filter-kind").value;
  return filters;
}

/** The filters as they are now, from their first page. */
function applyFilters() {
  clearTimeout(listing.typing);
  listing.filters = filtersShown();
  listing.pages = [firstPage()];
  refreshRecordings();
}

function recordingItem(stem, files) {
  files.sort((a, b) => (a.kind === "video" ? -1 : 1) - (b.kind === "video" ? -1 : 1));
  const duration = Math.max(...files.map((f) => f.duration || 0));
  const media = element("div", { class: "media" });
  for (const file of files) {
    if (file.kind === "video") {
      media.append(element("video", {
        controls: "", playsinline: "", preload: "none", src: withToken(file.url),
        poster: file.poster ? withToken(file.poster) : null,
      }));
    } else {
      media.append(element("audio", { controls: "", preload: "none", src: withToken(file.url) }));
    }
  }
  const sizes = files.map((f) => `${f.kind} ${bytes(f.size)}`).join(" · ");
  const remove = element("button", { type: "button", class: "danger", onclick: () => removeRecording(stem, files) },
    "Delete");
  remove.hidden = !allowed("delete");
  return element(
    "li",
    { "data-stem": stem },
    element("div", { class: "row" },
      element("div", {},
        element("div", { class: "name" }, stem),
        element("div", { class: "meta" }, `${when(files[0].created)} · ${clock(duration)} · ${sizes}`)),
      remove),
    media,
  );
}

async function removeRecording(stem, files) {
  if (!confirm(`Delete ${stem}? This cannot be undone.`)) return;
  for (const file of files) {
    const response = await api(file.url, { method: "DELETE" });
    if (!response.ok && response.status !== 404) {
      alert(`Could not delete ${file.name} (${response.status}).`);
      break;
    }
  }
  refreshRecordings();
}

// --- start --------------------------------------------------------------------------------------

async function main() {
  state.force = forced();
  loadToken();
  whenRefused(askForToken);
  const config = await loadConfig();
  state.fps = config.fps;
  state.resumeGrace = config.resumeGrace ?? 0;
  $("#server-info").textContent = `${config.fps} fps${config.auth ? " · token needed" : ""}`;
  if (config.auth && !hasToken()) askForToken();
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    useToken($("#token-input").value.trim());
    $("#auth").hidden = true;
    // A view opened without a token (or with one refused) connects again with this one.
    const watching = state.viewer?.name ?? linkedRecording();
    if (watching) watch(watching);
    refreshSessions();
    refreshRecordings();
  });
  $("#token-forget").addEventListener("click", () => {
    forgetToken();
    askForToken();
  });
  $("#live-form").addEventListener("submit", goLive);
  $("#stop").addEventListener("click", stopLive);
  $("#viewer-close").addEventListener("click", closeViewer);
  $("#filter-client").addEventListener("input", () => {
    clearTimeout(listing.typing);
    listing.typing = setTimeout(applyFilters, FILTER_DELAY_MS);
  });
  $("#filter-kind").addEventListener("change", applyFilters);
  $("#recording-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    applyFilters();
  });
  $("#newer").addEventListener("click", () => turnPage(false));
  $("#older").addEventListener("click", () => turnPage(true));
  if (!navigator.mediaDevices?.getUserMedia) {
    liveStatus("error", "This browser cannot go live here (camera access needs https or localhost).");
    $("#go").disabled = true;
  }
  const link = linkedRecording();
  if (link && !(config.auth && !hasToken())) watch(link); // else once a token is given
  refreshSessions();
  applyFilters(); // a browser may have kept what the filter box held
  setInterval(() => document.hidden || refreshSessions(), 2000);
  document.body.dataset.ready = "true";
}

main();
