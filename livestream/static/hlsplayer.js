// The page's own player of a live session's Low-Latency HLS, through Media Source Extensions:
// no library, no CDN. It reads the multivariant playlist, then each track's media playlist
// (video, and the audio rendition when there is one), starts at the newest part a picture can
// start from (the live edge), and from there fetches every part in order: a part the playlist
// lists at once; the next one by a blocking reload (`_HLS_msn`, `_HLS_part`) and, meanwhile, by
// asking for the preload hint, which the server answers the moment the part is complete. Each
// track has a SourceBuffer; what is more than a few seconds behind is removed. It stays at the
// live edge: a little faster than real time when it drifts behind, a jump when it is far behind.
// Each part's program date time and decode time tie the media's clock to the wall clock, for
// the page's latency readout.

import { newestIndependent, nextPart, readMedia, readMultivariant } from "./m3u8.js";

// How far behind the newest media the player plays (s): parts come every 0.2 s, and this
// much ahead keeps the picture moving between two of them.
const HOLD = 0.3;
// More than SLACK further behind: play faster, the more so the further (at most MAX_RATE);
// more than JUMP behind: jump to HOLD behind.
const SLACK = 0.1;
const JUMP = 0.8;
const MAX_RATE = 1.25;
// Seconds kept in a SourceBuffer behind what is shown; removed when twice that is there.
const KEEP = 3;
const TICK_MS = 200;
// A failed request (not a refusal) is tried again after this long, this many times in a row.
const RETRY_MS = 500;
const RETRIES = 10;

/** A track or playlist the browser cannot take: the page may try its own HLS instead. */
export class Unsupported extends Error {}

/** The server answered ``status``: 404 (no such live session), 403, 401... */
export class Refused extends Error {
  constructor(status, url) {
    super(`${status} for ${new URL(url).pathname}`);
    this.status = status;
  }
}

/** The session's recording is published: the multivariant playlist points to it. */
export class Published extends Error {}

// --- fMP4: the two numbers read from the boxes ---------------------------------------------------

function* boxes(bytes, start, end) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = start;
  while (at + 8 <= end) {
    let size = view.getUint32(at);
    let header = 8;
    if (size === 1) {
      size = Number(view.getBigUint64(at + 8));
      header = 16;
    } else if (size === 0) size = end - at;
    if (size < header || at + size > end) return;
    yield { type: String.fromCharCode(...bytes.subarray(at + 4, at + 8)), start: at + header, end: at + size };
    at += size;
  }
}

/** The first box at ``path`` (`["moov", "trak", "mdia", "mdhd"]`), or null. */
function find(bytes, path, start = 0, end = bytes.length) {
  for (const box of boxes(bytes, start, end)) {
    if (box.type !== path[0]) continue;
    return path.length === 1 ? box : find(bytes, path.slice(1), box.start, box.end);
  }
  return null;
}

/** The timescale of an init segment's (first) track. */
export function timescale(init) {
  const mdhd = find(init, ["moov", "trak", "mdia", "mdhd"]);
  if (!mdhd) return null;
  const view = new DataView(init.buffer, init.byteOffset);
  return view.getUint32(mdhd.start + (init[mdhd.start] === 1 ? 20 : 12));
}

/** The decode time (in timescale ticks) of a part's first fragment. */
export function decodeTime(part) {
  const tfdt = find(part, ["moof", "traf", "tfdt"]);
  if (!tfdt) return null;
  const view = new DataView(part.buffer, part.byteOffset);
  return part[tfdt.start] === 1 ? Number(view.getBigUint64(tfdt.start + 4)) : view.getUint32(tfdt.start + 4);
}

// --- the player ----------------------------------------------------------------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Do ``action`` on a SourceBuffer and wait until it is done. */
function update(buffer, action) {
  return new Promise((resolve, reject) => {
    const finish = (event) => {
      buffer.removeEventListener("updateend", finish);
      buffer.removeEventListener("error", finish);
      if (event.type === "error") reject(new Error("the browser could not take the media"));
      else resolve();
    };
    buffer.addEventListener("updateend", finish);
    buffer.addEventListener("error", finish);
    try {
      action();
    } catch (error) {
      buffer.removeEventListener("updateend", finish);
      buffer.removeEventListener("error", finish);
      reject(error);
    }
  });
}

/** One track: its media playlist followed part by part into its SourceBuffer. */
class Track {
  constructor(player, { kind, url, type }) {
    this.player = player;
    this.kind = kind;
    this.url = url;
    this.type = type;
    this.playlist = null;
    this.last = null; // the part appended last
    this.hinted = null; // {url, data}: the preload hint asked for
    this.scale = null;
    this.caughtUp = false; // once every part the playlist listed is appended
  }

  async load(msn = null, part = null) {
    const url = new URL(this.url);
    if (msn !== null) {
      url.searchParams.set("_HLS_msn", msn);
      url.searchParams.set("_HLS_part", part);
    }
    for (;;) {
      const response = await this.player.get(url.href);
      // 503: what a blocking reload asked for did not come in time (the session paused?).
      if (response.status === 503) continue;
      if (!response.ok) throw new Refused(response.status, url.href);
      this.playlist = readMedia(await response.text(), this.url);
      return this.playlist;
    }
  }

  /** The part after the last one appended, where the playlist lists it; if the playlist no
   * longer reaches back to it (this track fell far behind), the newest it can start from. */
  following() {
    if (!this.last) return this.start();
    const { parts } = this.playlist;
    const at = parts.findIndex((p) => p.msn === this.last.msn && p.index === this.last.index);
    if (at >= 0) return parts[at + 1] ?? null;
    const first = parts[0];
    const behind = first && (first.msn > this.last.msn || (first.msn === this.last.msn && first.index > this.last.index));
    return behind ? this.start() : null;
  }

  /** Where to begin: the newest independent part (for sound, the part that holds the
   * picture's first instant, ``at``), or null when the playlist has none yet. */
  start(at = null) {
    const { parts } = this.playlist;
    if (this.kind === "audio" && at !== null) {
      return parts.findLast((p) => p.date <= at.date + 1) ?? parts[0] ?? null;
    }
    return newestIndependent(this.playlist);
  }

  /** The part to begin at, once the playlist has one. */
  async begin(at = null) {
    for (;;) {
      const part = this.start(at);
      if (part) return part;
      if (this.playlist.ended) throw new Refused(404, this.url);
      await this.load(...nextPart(this.playlist, this.playlist.parts.at(-1)));
    }
  }

  async bytes(url) {
    const response = await this.player.get(url);
    if (response.status === 404) return null; // not in the window, or did not come in time
    if (!response.ok) throw new Refused(response.status, url);
    return new Uint8Array(await response.arrayBuffer());
  }

  /** A part's bytes: the preload hint's answer when it was the one hinted. */
  async partBytes(url) {
    const hinted = this.hinted;
    this.hinted = null;
    if (hinted?.url === url) {
      const data = await hinted.data;
      if (data) return data;
    }
    return this.bytes(url);
  }

  async append(data) {
    await update(this.buffer, () => this.buffer.appendBuffer(data));
    const shown = this.player.video.currentTime;
    const buffered = this.buffer.buffered;
    if (buffered.length && shown - buffered.start(0) > 2 * KEEP) {
      await update(this.buffer, () => this.buffer.remove(0, shown - KEEP));
    }
  }

  /** Follow the playlist from ``first`` to its end (or until the player closes). */
  async run(first) {
    let part = first;
    let map = null;
    let misses = 0; // parts listed yet not there, in a row
    while (!this.player.closed) {
      if (part === null) {
        this.caughtUp = true;
        if (this.playlist.ended) break;
        // Not listed yet: ask for the playlist that lists it and, meanwhile, for the part itself.
        if (this.playlist.hint && this.hinted?.url !== this.playlist.hint) {
          const url = this.playlist.hint;
          this.hinted = { url, data: this.bytes(url).catch(() => null) };
        }
        await this.load(...nextPart(this.playlist, this.last));
        part = this.following();
        continue;
      }
      if (part.map !== map) {
        const init = await this.bytes(part.map);
        if (!init) throw new Refused(404, part.map);
        this.scale = timescale(init);
        await this.append(init);
        map = part.map;
      }
      const data = await this.partBytes(part.url);
      if (data === null) {
        // Gone past, or never completed: the playlist again, and on from where it stands.
        if (++misses > RETRIES) throw new Refused(404, part.url);
        await this.load();
        part = this.following();
        continue;
      }
      const ticks = decodeTime(data);
      if (ticks !== null && this.scale) this.player.timed(this.kind, ticks / this.scale, part.date);
      await this.append(data);
      misses = 0;
      this.last = part;
      part = this.following();
    }
  }
}

/** Plays the live HLS at ``url`` (the multivariant playlist) in ``video``. ``onEnded`` runs
 * once the stream ended and was played out, ``onPlaying`` when it plays, ``onError`` with what
 * stopped it otherwise. */
export class HlsPlayer {
  constructor(video, url, { onEnded = () => {}, onPlaying = () => {}, onError = () => {} } = {}) {
    this.video = video;
    this.url = new URL(url, location.href).href;
    this.onEnded = onEnded;
    this.onPlaying = onPlaying;
    this.onError = onError;
    this.closed = false;
    this.aborter = new AbortController();
    this.tracks = [];
    // Media time -> wall clock: [media seconds, ms since the epoch] of the newest part placed.
    this.clock = null;
  }

  /** GET ``url``; a failed request (not an answer) is tried again a few times. */
  async get(url, options = {}) {
    for (let tries = 1; ; tries++) {
      try {
        return await fetch(url, { ...options, signal: this.aborter.signal });
      } catch (error) {
        if (this.closed || tries >= RETRIES) throw error;
        await sleep(RETRY_MS);
      }
    }
  }

  /** Reads the playlists and starts playing; rejects with Unsupported when this browser's
   * MSE cannot take the stream, Refused or Published when there is nothing live to play. */
  async start() {
    const MediaSourceType = window.MediaSource ?? window.ManagedMediaSource;
    // Not followed: once published, the playlist's URL points to the whole recording.
    const response = await this.get(this.url, { redirect: "manual" });
    if (response.type === "opaqueredirect") throw new Published(this.url);
    if (!response.ok) throw new Refused(response.status, this.url);
    const described = readMultivariant(await response.text(), this.url);
    if (!MediaSourceType || !described.every((t) => MediaSourceType.isTypeSupported(t.type))) {
      throw new Unsupported(described.map((t) => t.codecs.join(",")).join(" + "));
    }
    this.tracks = described.map((t) => new Track(this, t));
    this.codecs = Object.fromEntries(described.map((t) => [t.kind, t.codecs.join(",")]));
    await Promise.all(this.tracks.map((track) => track.load()));
    // The picture leads: sound begins where it does.
    const lead = this.tracks.find((t) => t.kind === "video") ?? this.tracks[0];
    const first = await lead.begin();
    const firsts = await Promise.all(this.tracks.map((t) => (t === lead ? first : t.begin(first))));
    if (this.closed) return;

    const source = new MediaSourceType();
    if (!window.MediaSource) this.video.disableRemotePlayback = true; // ManagedMediaSource asks it
    this.objectUrl = URL.createObjectURL(source);
    this.video.src = this.objectUrl;
    await new Promise((resolve) => source.addEventListener("sourceopen", resolve, { once: true }));
    this.source = source;
    for (const track of this.tracks) track.buffer = source.addSourceBuffer(track.type);
    this.video.addEventListener("ended", () => this.closed || this.onEnded(), { once: true });
    this.timer = setInterval(() => this.keepUp(), TICK_MS);
    Promise.all(this.tracks.map((t, i) => t.run(firsts[i])))
      .then(() => this.endOfStream())
      .catch((error) => this.closed || this.onError(error));
  }

  /** Every track played to its end: the media element may end too. */
  async endOfStream() {
    if (this.closed || this.source.readyState !== "open") return;
    while (this.tracks.some((t) => t.buffer.updating)) await sleep(20);
    this.source.endOfStream();
  }

  /** A part of ``kind`` starting at ``media`` seconds was shown live at ``date``. */
  timed(kind, media, date) {
    if ((kind === "video" || this.tracks.length === 1) && Number.isFinite(date)) this.clock = [media, date];
  }

  /** The wall-clock time (ms since the epoch) of the media at ``media`` seconds, or NaN. */
  wallClock(media) {
    return this.clock ? this.clock[1] + (media - this.clock[0]) * 1000 : NaN;
  }

  /** Stay at the live edge: play from HOLD behind the newest media, faster while drifting
   * behind, with a jump when far behind. Playing starts once every track has what its
   * playlist listed when the player came (the start is the newest part a picture can start
   * from, up to a segment behind): from HOLD behind its end. */
  keepUp() {
    const video = this.video;
    const buffered = video.buffered;
    if (!buffered.length || !this.tracks.every((t) => t.caughtUp)) return;
    const start = buffered.start(buffered.length - 1);
    const end = buffered.end(buffered.length - 1);
    const behind = end - video.currentTime;
    const ended = this.source.readyState === "ended";
    if (!ended && (video.currentTime < start || behind > JUMP)) {
      video.currentTime = Math.max(start, end - HOLD);
    }
    const late = behind - HOLD;
    video.playbackRate = !ended && late > SLACK ? Math.min(MAX_RATE, 1 + late / 2) : 1;
    if (video.paused && !video.ended && !this.starting) this.play();
  }

  /** Play, with sound if the browser lets the page start it, else muted. */
  async play() {
    this.starting = true;
    try {
      await this.video.play();
      this.onPlaying();
    } catch (error) {
      if (error.name === "NotAllowedError" && !this.video.muted) {
        this.video.muted = true;
        await this.video.play().catch(() => {});
        this.onPlaying();
      }
    } finally {
      this.starting = false;
    }
  }

  close() {
    this.closed = true;
    this.aborter.abort();
    clearInterval(this.timer);
    this.video.removeAttribute("src");
    this.video.load();
    if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
  }
}
