// Watching a live session: its Low-Latency HLS (`/live/<recording>/index.m3u8`) in the panel's
// <video>, and the link a live view has of its own (`/#watch=<recording>`). The page's own MSE
// player (hlsplayer.js) plays it wherever the browser has Media Source Extensions for its
// codecs, since it keeps to the live edge; elsewhere (an iPhone without MSE, Safari with an
// Opus session) the browser's own HLS does, if it has one. (Chromium has an HLS of its own too
// now, and says so to canPlayType, but is not low-latency: MSE goes first.) The panel says how
// far behind the picture is: now minus the wall-clock time of the frame shown, from the program
// date time of its part and how far into the part it is.

import { withToken } from "./api.js";
import { HlsPlayer, Published, Refused, Unsupported } from "./hlsplayer.js";

const HLS_TYPE = "application/vnd.apple.mpegurl";
// The latency readout's text changes at most this often (its data attribute at every frame).
const READOUT_MS = 250;
const CODEC_NAMES = { avc1: "H.264", avc3: "H.264", mp4a: "AAC", opus: "Opus" };

/** The page's URL fragment that opens the live view of ``name``. */
export const watchLink = (name) => `#watch=${encodeURIComponent(name)}`;

/** The recording a live view's link (`/#watch=<recording>`) names, or null. */
export function linkedRecording() {
  const link = location.hash.match(/^#watch=(.+)$/);
  return link ? decodeURIComponent(link[1]) : null;
}

const described = (codecs) =>
  (codecs ?? "").split(",").filter(Boolean).map((c) => CODEC_NAMES[c.split(".")[0]] ?? c).join(", ");

/** One live view in ``panel`` (its video, status and latency lines); ``onEnded`` runs when the
 * session ends, so the page can list its recording. */
export class Viewer {
  constructor(name, panel, onEnded) {
    this.name = name;
    this.panel = panel;
    this.onEnded = onEnded;
    this.video = panel.querySelector("#viewer-video");
    this.sound = panel.querySelector("#viewer-sound");
    this.player = null;
    this.readAt = 0;
    this.closed = false;
    this.finished = false;
  }

  start() {
    this.panel.hidden = false;
    Object.assign(this.panel.dataset, {
      recording: this.name, phase: "connecting", player: "", frames: "0", latencyMs: "",
      videoCodec: "", audioCodec: "",
    });
    this.panel.querySelector("#viewer-latency").textContent = "";
    this.status(`Connecting to ${this.name}…`);
    this.video.muted = false;
    this.showSound();
    this.sound.onclick = () => {
      this.video.muted = !this.video.muted;
      this.showSound();
    };
    this.countFrames();
    this.play(withToken(`/live/${encodeURIComponent(this.name)}/index.m3u8`));
  }

  async play(url) {
    this.player = new HlsPlayer(this.video, url, {
      onEnded: () => this.ended(),
      onPlaying: () => this.playing(),
      onError: (error) => this.failed(error),
    });
    try {
      await this.player.start();
      this.panel.dataset.player = "mse";
      this.panel.dataset.videoCodec = this.player.codecs.video ?? "";
      this.panel.dataset.audioCodec = this.player.codecs.audio ?? "";
    } catch (error) {
      if (this.closed) return;
      this.player.close();
      this.player = null;
      if (error instanceof Unsupported && this.video.canPlayType(HLS_TYPE)) this.playNatively(url);
      else if (error instanceof Published) this.ended();
      else if (error instanceof Refused) this.notLive(`${error.status}`);
      else this.failed(error);
    }
  }

  /** The browser's own HLS: it finds the live edge itself. */
  playNatively(url) {
    this.panel.dataset.player = "native";
    this.video.onended = () => this.ended();
    this.video.onplaying = () => this.playing();
    this.video.onerror = () => this.failed(new Error(this.video.error?.message || "cannot play"));
    this.video.src = url;
    this.video.play().catch(() => {
      this.video.muted = true;
      this.showSound();
      return this.video.play().catch(() => {});
    });
  }

  playing() {
    if (this.closed || this.finished) return;
    this.panel.dataset.phase = "playing";
    const codecs = [this.panel.dataset.videoCodec, this.panel.dataset.audioCodec].map(described);
    const what = codecs.filter(Boolean).join(" + ");
    this.status(`Watching ${this.name} live${what ? ` (${what})` : ""}`);
    this.showSound();
  }

  /** Count the frames shown and say how late each is; where the browser cannot tell frames
   * apart (no requestVideoFrameCallback), the latency from the playing position. */
  countFrames() {
    if ("requestVideoFrameCallback" in this.video) {
      const shown = (_, metadata) => {
        if (this.closed) return;
        // As the browser counts them: a callback may come for two frames shown at once.
        this.panel.dataset.frames = String(metadata.presentedFrames);
        this.readout(metadata.mediaTime);
        this.callback = this.video.requestVideoFrameCallback(shown);
      };
      this.callback = this.video.requestVideoFrameCallback(shown);
    } else {
      this.video.ontimeupdate = () => this.readout(this.video.currentTime);
    }
  }

  /** Now minus the wall-clock time of the media at ``mediaTime`` seconds. */
  readout(mediaTime) {
    let wall = NaN;
    if (this.player) wall = this.player.wallClock(mediaTime);
    else if (this.video.getStartDate) wall = this.video.getStartDate().getTime() + mediaTime * 1000;
    if (!Number.isFinite(wall)) return;
    const latency = Date.now() - wall;
    this.panel.dataset.latencyMs = String(Math.round(latency));
    if (performance.now() - this.readAt < READOUT_MS) return;
    this.readAt = performance.now();
    this.panel.querySelector("#viewer-latency").textContent = `${(latency / 1000).toFixed(1)} s behind live`;
  }

  showSound() {
    this.sound.hidden = this.panel.dataset.phase !== "playing";
    this.sound.textContent = this.video.muted ? "Unmute" : "Mute";
  }

  ended() {
    if (this.closed || this.finished) return;
    this.finished = true;
    this.panel.dataset.phase = "ended";
    this.status(`${this.name} ended; the recording is in the list below.`);
    this.panel.querySelector("#viewer-latency").textContent = "";
    this.showSound();
    this.onEnded();
  }

  notLive(why) {
    this.panel.dataset.phase = "not-live";
    this.status(`${this.name}: not live (${why}).`);
  }

  failed(error) {
    if (this.closed || this.finished) return;
    this.panel.dataset.phase = "error";
    this.status(`${this.name}: cannot play it here (${error.message}).`);
  }

  status(text) {
    this.panel.querySelector("#viewer-status").textContent = text;
  }

  close() {
    this.closed = true;
    if (this.callback !== undefined) this.video.cancelVideoFrameCallback(this.callback);
    this.video.onended = this.video.onplaying = this.video.onerror = this.video.ontimeupdate = null;
    if (this.player) this.player.close();
    else {
      this.video.removeAttribute("src");
      this.video.load();
    }
    this.panel.hidden = true;
  }
}
