// Watching a live session: the viewer WebSocket (/live/<recording>) drawn on a canvas and played
// through Web Audio, and the link a live view has of its own (`/#watch=<recording>`). JPEG frames
// are decoded by the browser's image decoder; H.264 (a session whose client encoded it) by
// WebCodecs' VideoDecoder, and Opus by its AudioDecoder.

import { socketUrl, withToken } from "./api.js";

// The kind bytes of the viewer WebSocket's binary messages.
const VIDEO = 0x01;
const AUDIO = 0x02;
const H264 = 0x21;
const OPUS = 0x22;
// Encoded chunks: kind, flags (bit 0: key), seq (uint32), timestamp (int64 µs), then the chunk.
const ENCODED_HEADER = 14;
// Past this many frames waiting in the decoder, it is behind: start again at the next keyframe
// rather than fall further behind.
const MAX_DECODE_QUEUE = 30;

/** The RFC 6381 codec string of an Annex B access unit's SPS (``avc1.`` + profile,
 * constraints and level in hex), or null without one. */
export function codecFromSps(unit) {
  for (let i = 0; i + 3 < unit.length; i++) {
    if (unit[i] === 0 && unit[i + 1] === 0 && unit[i + 2] === 1 && (unit[i + 3] & 0x1f) === 7) {
      if (i + 6 >= unit.length) return null;
      const hex = (byte) => byte.toString(16).padStart(2, "0");
      return `avc1.${hex(unit[i + 4])}${hex(unit[i + 5])}${hex(unit[i + 6])}`;
    }
  }
  return null;
}

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
    this.decoded = 0;
    this.audioBytes = 0;
    this.audioDecoded = 0; // Opus samples decoded
    this.videoCodec = null; // from LIVE: an H.264 session's codec string ("h264" before known)
    this.audioCodec = null;
    this.decoder = null;
    this.audioDecoder = null;
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
    this.panel.dataset.decoded = "0";
    this.panel.dataset.audioBytes = "0";
    this.panel.dataset.audioDecoded = "0";
    this.panel.dataset.videoCodec = "";
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
      if (message.eventType === "LIVE") {
        this.videoCodec = message.videoCodec ?? null;
        this.audioCodec = message.audioCodec ?? null;
        this.opusHead = message.opusHead ?? null;
        const what = this.videoCodec ? " (H.264)" : "";
        this.status(`Watching ${message.recording} live${what}`);
      }
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
    } else if (kind === H264) {
      this.frames++;
      this.panel.dataset.frames = String(this.frames);
      this.decodeVideo(data);
    } else if (kind === OPUS) {
      this.audioBytes += data.byteLength - ENCODED_HEADER;
      this.panel.dataset.audioBytes = String(this.audioBytes);
      this.decodeAudio(data);
    }
  }

  /** One H.264 access unit (Annex B): decoded from a keyframe on, drawn as it comes out. After
   * a decoder error, or a decoder too far behind, it waits for the next keyframe. */
  decodeVideo(data) {
    const view = new DataView(data);
    const key = (view.getUint8(1) & 1) === 1;
    const timestamp = Number(view.getBigInt64(6));
    const unit = new Uint8Array(data, ENCODED_HEADER);
    if (this.decoder?.state === "configured" && this.decoder.decodeQueueSize > MAX_DECODE_QUEUE) {
      this.decoder.close();
      this.decoder = null;
    }
    if (!this.decoder || this.decoder.state !== "configured") {
      if (!key || typeof VideoDecoder === "undefined") return;
      const known = this.videoCodec?.startsWith("avc1.") ? this.videoCodec : null;
      const codec = known ?? codecFromSps(unit);
      if (!codec) return;
      this.decoder = new VideoDecoder({
        output: (frame) => this.show(frame),
        error: () => {}, // closed: the next keyframe starts a new one
      });
      // No description: the access units are Annex B, their SPS and PPS in-band.
      this.decoder.configure({ codec, optimizeForLatency: true });
      this.panel.dataset.videoCodec = codec;
    }
    try {
      const type = key ? "key" : "delta";
      this.decoder.decode(new EncodedVideoChunk({ type, timestamp, data: unit }));
    } catch {
      this.decoder = null;
    }
  }

  show(frame) {
    if (this.canvas.width !== frame.displayWidth) this.canvas.width = frame.displayWidth;
    if (this.canvas.height !== frame.displayHeight) this.canvas.height = frame.displayHeight;
    this.context.drawImage(frame, 0, 0);
    frame.close();
    this.decoded++;
    this.panel.dataset.decoded = String(this.decoded);
  }

  /** One Opus packet, decoded and played as the PCM is. */
  decodeAudio(data) {
    if (typeof AudioDecoder === "undefined" || this.audio.state === "closed") return;
    const view = new DataView(data);
    const timestamp = Number(view.getBigInt64(6));
    if (!this.audioDecoder || this.audioDecoder.state !== "configured") {
      const head = this.opusHead ? Uint8Array.from(atob(this.opusHead), (c) => c.charCodeAt(0)) : null;
      const channels = head?.[9] ?? 1;
      this.audioDecoder = new AudioDecoder({
        output: (audio) => this.playDecoded(audio),
        error: () => {}, // closed: the next packet starts a new one
      });
      const config = { codec: "opus", sampleRate: 48000, numberOfChannels: channels };
      this.audioDecoder.configure(head ? { ...config, description: head } : config);
    }
    try {
      const packet = new Uint8Array(data, ENCODED_HEADER);
      this.audioDecoder.decode(new EncodedAudioChunk({ type: "key", timestamp, data: packet }));
    } catch {
      this.audioDecoder = null;
    }
  }

  playDecoded(audio) {
    const samples = audio.numberOfFrames;
    this.audioDecoded += samples;
    this.panel.dataset.audioDecoded = String(this.audioDecoded);
    if (samples === 0 || this.audio.state === "closed") {
      audio.close();
      return;
    }
    const buffer = this.audio.createBuffer(audio.numberOfChannels, samples, audio.sampleRate);
    for (let c = 0; c < audio.numberOfChannels; c++) {
      const plane = new Float32Array(samples);
      audio.copyTo(plane, { planeIndex: c, format: "f32-planar" });
      buffer.copyToChannel(plane, c);
    }
    audio.close();
    this.schedule(buffer);
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
      this.decoded++;
      this.panel.dataset.decoded = String(this.decoded);
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
    this.schedule(buffer);
  }

  schedule(buffer) {
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
    for (const decoder of [this.decoder, this.audioDecoder]) {
      if (decoder && decoder.state !== "closed") decoder.close();
    }
    this.audio.close();
    this.panel.hidden = true;
  }
}
