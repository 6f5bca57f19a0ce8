// Watching a live session: the viewer WebSocket (/live/<recording>) drawn on a canvas and played
// through Web Audio, and the link a live view has of its own (`/#watch=<recording>`).

import { socketUrl, withToken } from "./api.js";

// The kind bytes of the viewer WebSocket's binary messages.
const VIDEO = 1;
const AUDIO = 2;

/** The page's URL fragment that opens the live view of ``name``. */
export const watchLink = (name) => `#watch=${encodeURIComponent(name)}`;

/** The recording a live view's link (`/#watch=<recording>`) names, or null. */
export function linkedRecording() {
  const link = location.hash.match(/^#watch=(.+)$/);
  return link ? decodeURIComponent(link[1]) : null;
}

/** One live view in ``panel`` (its canvas and status line); ``onEnded`` runs when the session
 * ends, so the page can list its recording. */
export class Viewer {
  constructor(name, panel, onEnded) {
    this.name = name;
    this.frames = 0;
    this.audioBytes = 0;
    this.pending = null;
    this.drawing = false;
    this.panel = panel;
    this.onEnded = onEnded;
    this.canvas = panel.querySelector("#viewer-canvas");
    this.context = this.canvas.getContext("2d");
    this.audio = new AudioContext();
    this.nextAudio = 0;
  }

  start() {
    this.panel.hidden = false;
    this.panel.dataset.frames = "0";
    this.panel.dataset.audioBytes = "0";
    this.panel.dataset.recording = this.name;
    this.status(`Connecting to ${this.name}…`);
    this.ws = new WebSocket(socketUrl(withToken(`/live/${encodeURIComponent(this.name)}`)));
    this.ws.binaryType = "arraybuffer";
    this.ws.onmessage = (event) => this.received(event.data);
    this.ws.onclose = (event) => {
      if (!this.ended) this.status(`${this.name}: not live (${event.code}).`);
    };
  }

  received(data) {
    if (typeof data === "string") {
      const message = JSON.parse(data);
      if (message.eventType === "LIVE") this.status(`Watching ${message.recording} live`);
      if (message.eventType === "ENDED") {
        this.ended = true;
        this.status(`${this.name} ended; the recording is in the list below.`);
        this.onEnded();
      }
      return;
    }
    const kind = new Uint8Array(data, 0, 1)[0];
    if (kind === VIDEO) {
      this.frames++;
      this.panel.dataset.frames = String(this.frames);
      this.pending = new Blob([new Uint8Array(data, 1)], { type: "image/jpeg" });
      this.draw();
    } else if (kind === AUDIO) {
      this.audioBytes += data.byteLength - 1;
      this.panel.dataset.audioBytes = String(this.audioBytes);
      this.play(new DataView(data, 1));
    }
  }

  // Only the latest frame is decoded: frames that arrive while one is decoding are skipped.
  async draw() {
    if (this.drawing || !this.pending) return;
    this.drawing = true;
    const blob = this.pending;
    this.pending = null;
    try {
      const bitmap = await createImageBitmap(blob);
      if (this.canvas.width !== bitmap.width) this.canvas.width = bitmap.width;
      if (this.canvas.height !== bitmap.height) this.canvas.height = bitmap.height;
      this.context.drawImage(bitmap, 0, 0);
      bitmap.close();
    } catch {
      // a frame the browser cannot decode is skipped; the next one replaces it
    } finally {
      this.drawing = false;
      this.draw();
    }
  }

  play(view) {
    const samples = view.byteLength >> 1;
    if (samples === 0 || this.audio.state === "closed") return;
    const buffer = this.audio.createBuffer(1, samples, 44100);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < samples; i++) channel[i] = view.getInt16(i * 2, true) / 32768;
    const now = this.audio.currentTime;
    // Keep the delay small: start 100 ms ahead, and drop audio that would play over 0.5 s late.
    if (this.nextAudio < now) this.nextAudio = now + 0.1;
    if (this.nextAudio > now + 0.5) return;
    const source = this.audio.createBufferSource();
    source.buffer = buffer;
    source.connect(this.audio.destination);
    source.start(this.nextAudio);
    this.nextAudio += buffer.duration;
  }

  status(text) {
    this.panel.querySelector("#viewer-status").textContent = text;
  }

  close() {
    this.ended = true;
    this.ws?.close();
    this.audio.close();
    this.panel.hidden = true;
  }
}
