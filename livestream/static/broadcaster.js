// Going live: the camera and microphone streamed to the daemon. Where the browser can (WebCodecs,
// webcodecs.js), the page encodes them itself, H.264 and Opus, sent in the encoded binary form
// (kind 0x21/0x22, flags, seq, timestamp in µs, chunk); elsewhere, or when the server does not
// take them, JPEG frames and PCM in the timed binary STREAM form (kind 0x11/0x12, seq,
// captureTime, chunk). With resume (the server gives a resumeToken), every chunk is kept until an
// ACK says it is in the recording, so a dropped connection is resumed and the chunks it lost are
// sent again: one recording, every chunk once.

import {
  base64,
  chooseCodecs,
  h264Config,
  OPUS_RATE,
  opusConfig,
  opusHead,
  sameBytes,
} from "./webcodecs.js";

const VIDEO = 0x11;
const AUDIO = 0x12;
const H264 = 0x21;
const OPUS = 0x22;
const HEADER = 13; // kind byte, seq (uint32 big-endian), captureTime (float64 big-endian, ms)
// kind byte, flags (bit 0: key), seq (uint32 big-endian), timestamp (int64 big-endian, µs)
const ENCODED_HEADER = 14;
// Which source's seq a kind counts: video and audio are numbered apart, whatever their codec.
const SOURCE = { [VIDEO]: "video", [H264]: "video", [AUDIO]: "audio", [OPUS]: "audio" };
// An encoder this many frames behind is not keeping up: frames are skipped, not queued.
const MAX_ENCODE_QUEUE = 3;
// A keyframe at least this often (and whenever the server asks for one).
const KEYFRAME_MS = 2000;
// Past this much unsent on the socket (the server slowed us down), frames are skipped, not queued.
const MAX_BUFFERED = 4 * 1024 * 1024;
// What is kept unacknowledged, by capture time: the oldest video frames go first (a frame is
// 30-80 KB), audio only far later and never silently (about 88 KB a second).
const KEEP_VIDEO_MS = 10_000;
const KEEP_AUDIO_MS = 120_000;
// Reconnecting: the first attempt after 250 ms, waits doubling to 2 s, each attempt given 5 s.
const RETRY_FIRST_MS = 250;
const RETRY_MAX_MS = 2000;
const ATTEMPT_MS = 5000;
const SAMPLE_RATE = 44100;

// captureTime: milliseconds since the Unix epoch, on this browser's monotonic clock.
const captureNow = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function failure(code, message) {
  return Object.assign(new Error(message), { code });
}

/** The chunks sent (or waiting to be) that the server has not acknowledged, in capture order. */
export class Outbox {
  constructor() {
    this.chunks = [];
    this.next = { video: 0, audio: 0 };
    this.droppedFrames = 0;
    this.droppedAudioMs = 0;
  }

  /** The next chunk of ``kind`` (JPEG or PCM), numbered and framed; kept when ``keep`` (resume
   * is on). ``time``: its captureTime (ms). */
  add(kind, buffer, time, keep) {
    const message = new Uint8Array(HEADER + buffer.byteLength);
    const view = new DataView(message.buffer);
    const seq = this.number(kind);
    view.setUint8(0, kind);
    view.setUint32(1, seq);
    view.setFloat64(5, time);
    message.set(new Uint8Array(buffer), HEADER);
    const ms = kind === AUDIO ? (buffer.byteLength / 2 / SAMPLE_RATE) * 1000 : 0;
    return this.keep({ kind, seq, time, ms, message }, keep);
  }

  /** The next encoded chunk of ``kind`` (H.264 or Opus: ``data``, its ``timestamp`` in µs,
   * ``key``, ``duration`` in µs), numbered and framed; kept when ``keep``. */
  addEncoded(kind, data, timestamp, key, duration, keep) {
    const message = new Uint8Array(ENCODED_HEADER + data.byteLength);
    const view = new DataView(message.buffer);
    const seq = this.number(kind);
    view.setUint8(0, kind);
    view.setUint8(1, key ? 1 : 0);
    view.setUint32(2, seq);
    view.setBigInt64(6, BigInt(timestamp));
    message.set(data, ENCODED_HEADER);
    const ms = kind === OPUS ? (duration ?? 0) / 1000 : 0;
    return this.keep({ kind, seq, time: timestamp / 1000, ms, message }, keep);
  }

  number(kind) {
    return this.next[SOURCE[kind]]++;
  }

  keep(chunk, keep) {
    if (keep) {
      this.chunks.push(chunk);
      this.bound(chunk.time);
    }
    return chunk.message;
  }

  /** ``{"video": seq|null, "audio": seq|null}``: everything up to these is in the recording. */
  acknowledge(ack) {
    const safe = { video: ack.video ?? -1, audio: ack.audio ?? -1 };
    this.chunks = this.chunks.filter((chunk) => chunk.seq > safe[SOURCE[chunk.kind]]);
  }

  bound(now) {
    const old = (chunk, source, keep) => SOURCE[chunk.kind] === source && chunk.time < now - keep;
    const before = this.chunks.length;
    this.chunks = this.chunks.filter((chunk) => !old(chunk, "video", KEEP_VIDEO_MS));
    this.droppedFrames += before - this.chunks.length;
    for (const chunk of this.chunks.filter((c) => old(c, "audio", KEEP_AUDIO_MS))) {
      this.droppedAudioMs += chunk.ms;
    }
    this.chunks = this.chunks.filter((chunk) => !old(chunk, "audio", KEEP_AUDIO_MS));
  }

  /** How far back the oldest chunk kept goes, in seconds. */
  span(now) {
    return this.chunks.length ? (now - this.chunks[0].time) / 1000 : 0;
  }
}

/**
 * One broadcast. ``ended`` fires once with how it ended: ``{kind: "closed", recordings}`` (the
 * server's CLOSED), ``{kind: "lost", code, reason}`` (the connection dropped without resume), or
 * ``{kind: "expired", reason}`` (it dropped and could not be resumed in time).
 */
export class Broadcaster {
  /** ``force``: what the page's URL asks for, ``{video: "jpeg"}`` and/or ``{audio: "pcm"}``. */
  constructor({ fps, grace, url, protocols, preview, onStatus, onError, force = {} }) {
    Object.assign(this, { fps, grace, url, protocols, preview, onStatus, onError, force });
    this.outbox = new Outbox();
    // What is sent, once the server said it takes it (CONNECTED): "h264"/"jpeg", "opus"/"pcm".
    this.videoCodec = null;
    this.audioCodec = null;
    this.why = null; // why the page sends JPEG, when it does
    this.wantKey = true;
    this.keyframeRequests = {};
    this.serverErrors = {}; // the server's ERROR codes, counted
    this.opusHeadChecked = null; // whether Chromium's OpusHead was the one CONNECT sent
    this.skipped = 0;
    this.audioBytes = 0;
    this.resumes = 0;
    this.resent = 0;
    this.running = false;
    this.reconnecting = false;
    this.stopping = false;
    this.resumeToken = null;
    this.outcome = null;
    this.ended = new Promise((resolve) => {
      this.end = (outcome) => {
        if (this.outcome) return;
        this.outcome = outcome;
        resolve(outcome);
      };
    });
  }

  get frames() {
    return this.outbox.next.video;
  }

  async start(id) {
    this.id = id;
    this.onStatus("connecting", "Asking for camera and microphone…");
    this.media = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 } },
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
    });
    this.preview.srcObject = this.media;
    this.preview.classList.add("on");
    await this.preview.play();
    this.size = this.frameSize();
    const wanted = await chooseCodecs(this.size.width, this.size.height, this.fps, this.force);
    const hello = { eventType: "CONNECT", id, resume: true };
    if (wanted.video === "h264") hello.videoCodec = "h264";
    if (wanted.audio === "opus") {
      this.opusHead = opusHead();
      Object.assign(hello, { audioCodec: "opus", opusHead: base64(this.opusHead) });
    }
    this.onStatus("connecting", "Connecting…");
    const connected = await this.connect(hello);
    this.name = connected.recording;
    this.resumeToken = connected.resumeToken ?? null;
    // A server that does not echo the codecs does not know them: it records JPEG and PCM.
    this.videoCodec = wanted.video === "h264" && connected.videoCodec === "h264" ? "h264" : "jpeg";
    this.audioCodec = wanted.audio === "opus" && connected.audioCodec === "opus" ? "opus" : "pcm";
    this.why = wanted.why ?? (this.videoCodec === "jpeg" ? "the server does not take H.264" : null);
    this.running = true;
    await this.startAudio();
    this.startVideo();
  }

  /** The size frames are sent at: the camera's, scaled down to 640 wide at most, even (H.264's
   * 4:2:0 needs it; JPEG does not mind). */
  frameSize() {
    const preview = this.preview;
    const scale = Math.min(1, 640 / (preview.videoWidth || 640));
    const even = (n) => 2 * Math.round(n / 2);
    return {
      width: even((preview.videoWidth || 640) * scale),
      height: even((preview.videoHeight || 480) * scale),
    };
  }

  /** What the page sends, for people: "H.264 (WebCodecs) + Opus (WebCodecs)", "JPEG + PCM". */
  describe() {
    const video = this.videoCodec === "h264" ? "H.264 (WebCodecs)" : "JPEG";
    const audio = this.audioCodec === "opus" ? "Opus (WebCodecs)" : "PCM";
    return `${video} + ${audio}`;
  }

  keyframeRequested(reason) {
    this.wantKey = true;
    this.keyframeRequests[reason] = (this.keyframeRequests[reason] ?? 0) + 1;
  }

  /**
   * Open a WebSocket and send ``hello`` (a CONNECT); fires with CONNECTED once the server also
   * said what it holds (the ACK that follows it when resuming), the socket then being this
   * broadcast's. Fails with the ERROR's code, "closed", or "timeout" after ``timeout`` ms.
   */
  connect(hello, timeout = 0) {
    const ws = new WebSocket(this.url, this.protocols);
    ws.binaryType = "arraybuffer";
    return new Promise((resolve, reject) => {
      let connected = null;
      const timer = timeout && setTimeout(() => fail(failure("timeout", "no answer")), timeout);
      const fail = (error) => {
        clearTimeout(timer);
        ws.onclose = ws.onmessage = null;
        ws.close();
        reject(error);
      };
      const done = () => {
        clearTimeout(timer);
        this.attach(ws);
        resolve(connected);
      };
      ws.onopen = () => ws.send(JSON.stringify(hello));
      ws.onclose = (event) => fail(failure("closed", `connection closed (${event.code})`));
      ws.onmessage = (event) => {
        const message = JSON.parse(event.data);
        if (message.eventType === "ERROR") {
          fail(failure(message.code, `${message.code}: ${message.message}`));
        } else if (message.eventType === "CONNECTED") {
          connected = message;
          if (!hello.resumeToken) done();
        } else if (message.eventType === "ACK" && connected) {
          this.outbox.acknowledge(message);
          done();
        } else if (message.eventType === "KEYFRAME_REQUEST") {
          this.keyframeRequested(message.reason);
        }
      };
    });
  }

  attach(ws) {
    this.ws = ws;
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.eventType === "ACK") this.outbox.acknowledge(message);
      else if (message.eventType === "KEYFRAME_REQUEST") this.keyframeRequested(message.reason);
      else if (message.eventType === "ERROR") {
        this.serverErrors[message.code] = (this.serverErrors[message.code] ?? 0) + 1;
        this.onError(message);
      }
      else if (message.eventType === "CLOSED") {
        this.closedBy = message;
        this.end({ kind: "closed", recordings: message.recordings });
      }
    };
    ws.onclose = (event) => {
      if (this.closedBy) return;
      if (this.resumeToken) this.reconnect();
      else this.end({ kind: "lost", code: event.code, reason: event.reason });
    };
  }

  /** Come back within the grace period with the resume token, send again what the server has
   * not acknowledged, then go on (or CLOSE, when Stop came meanwhile). Capture goes on. */
  async reconnect() {
    this.reconnecting = true;
    this.lostAt = performance.now();
    this.onStatus("reconnecting", "Connection lost, reconnecting…");
    const deadline = this.lostAt + this.grace * 1000;
    const hello = { eventType: "CONNECT", id: this.id, resumeToken: this.resumeToken };
    let reason = `it was not back within ${this.grace} s`;
    for (let wait = RETRY_FIRST_MS; ; wait = Math.min(2 * wait, RETRY_MAX_MS)) {
      const left = deadline - performance.now();
      if (left <= 0) break;
      await sleep(Math.min(wait, left));
      try {
        await this.connect(hello, Math.min(ATTEMPT_MS, Math.max(1, deadline - performance.now())));
      } catch (error) {
        if (error.code !== "resume_failed") continue;
        reason = "the server had already ended it";
        break;
      }
      this.reconnecting = false;
      this.resumes++;
      for (const chunk of this.outbox.chunks) this.ws.send(chunk.message);
      this.resent += this.outbox.chunks.length;
      if (this.stopping) this.ws.send(JSON.stringify({ eventType: "CLOSE" }));
      return;
    }
    this.reconnecting = false;
    this.end({ kind: "expired", reason });
  }

  /** Number and keep a chunk, and send it unless the connection is being re-established. */
  transmit(kind, buffer, time) {
    this.send(this.outbox.add(kind, buffer, time, this.resumeToken !== null));
  }

  /** The same for an encoder's output (an EncodedVideoChunk or EncodedAudioChunk). */
  transmitEncoded(kind, chunk) {
    const data = new Uint8Array(chunk.byteLength);
    chunk.copyTo(data);
    const key = chunk.type === "key" && kind === H264;
    const keep = this.resumeToken !== null;
    this.send(this.outbox.addEncoded(kind, data, chunk.timestamp, key, chunk.duration, keep));
    return data.byteLength;
  }

  send(message) {
    if (!this.reconnecting && this.ws.readyState === WebSocket.OPEN) this.ws.send(message);
  }

  startVideo() {
    if (this.videoCodec === "h264") {
      this.startH264();
      return;
    }
    const preview = this.preview;
    const canvas = document.createElement("canvas");
    const scale = Math.min(1, 640 / (preview.videoWidth || 640));
    canvas.width = Math.round((preview.videoWidth || 640) * scale);
    canvas.height = Math.round((preview.videoHeight || 480) * scale);
    const context = canvas.getContext("2d");
    const period = 1000 / this.fps;
    this.startedAt = performance.now();
    // Frame n is due at startedAt + n * period: the recording's clock is its frame count, so the
    // count keeps step with real time (a late frame is sent at once, not dropped).
    const tick = async () => {
      if (!this.running) return;
      const behind = performance.now() - (this.startedAt + this.frames * period);
      const backedUp = !this.reconnecting && this.ws.bufferedAmount > MAX_BUFFERED;
      if (backedUp || behind > 1000) {
        this.skipped++; // the server or this machine cannot keep up: skip rather than pile up
        this.startedAt += period;
      } else {
        const time = captureNow();
        context.drawImage(preview, 0, 0, canvas.width, canvas.height);
        const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.8));
        if (!this.running) return;
        this.transmit(VIDEO, await blob.arrayBuffer(), time);
      }
      const due = this.startedAt + this.frames * period;
      this.timer = setTimeout(tick, Math.max(0, due - performance.now()));
    };
    tick();
  }

  /** The camera drawn at the server's frame rate, as for JPEG, each frame handed to an H.264
   * VideoEncoder (a canvas, not MediaStreamTrackProcessor: the camera runs at its own rate,
   * 20 fps for Chromium's fake one, and the recording wants exactly --fps, steadily). A frame's
   * timestamp is its capture time in µs since the epoch, the clock of the audio's. */
  startH264() {
    const canvas = document.createElement("canvas");
    Object.assign(canvas, this.size);
    const context = canvas.getContext("2d");
    const encoder = new VideoEncoder({
      output: (chunk) => this.transmitEncoded(H264, chunk),
      error: (error) => this.encoderFailed("video", error),
    });
    encoder.configure(h264Config(canvas.width, canvas.height, this.fps));
    this.videoEncoder = encoder;
    const period = 1000 / this.fps;
    this.startedAt = performance.now();
    this.taken = 0;
    let lastKey = -Infinity;
    // Frame n is due at startedAt + n * period, as for JPEG; frames are counted as they are
    // taken, the encoder giving them back a little later.
    const tick = () => {
      if (!this.running || encoder.state !== "configured") return;
      const behind = performance.now() - (this.startedAt + this.taken * period);
      const backedUp = (!this.reconnecting && this.ws.bufferedAmount > MAX_BUFFERED) ||
        encoder.encodeQueueSize > MAX_ENCODE_QUEUE;
      if (backedUp || behind > 1000) {
        this.skipped++;
        this.startedAt += period;
      } else {
        const time = captureNow();
        context.drawImage(this.preview, 0, 0, canvas.width, canvas.height);
        const frame = new VideoFrame(canvas, {
          timestamp: Math.round(time * 1000),
          duration: Math.round(1e6 / this.fps),
        });
        const keyFrame = this.wantKey || time - lastKey >= KEYFRAME_MS;
        encoder.encode(frame, { keyFrame });
        frame.close();
        if (keyFrame) {
          this.wantKey = false;
          lastKey = time;
        }
        this.taken++;
      }
      const due = this.startedAt + this.taken * period;
      this.timer = setTimeout(tick, Math.max(0, due - performance.now()));
    };
    tick();
  }

  encoderFailed(what, error) {
    const message = `this browser's ${what} encoder failed: ${error.message}`;
    this.onError({ code: "encoder_failed", message });
  }

  async startAudio() {
    if (this.media.getAudioTracks().length === 0) return;
    if (this.audioCodec === "opus") {
      await this.startOpus();
      return;
    }
    this.audio = new AudioContext();
    await this.audio.audioWorklet.addModule("/static/worklet.js");
    const source = this.audio.createMediaStreamSource(this.media);
    this.capture = new AudioWorkletNode(this.audio, "pcm-capture");
    this.capture.port.onmessage = (event) => {
      if (!this.running) return;
      const pcm = event.data;
      // The chunk's first sample was taken its length ago.
      const time = captureNow() - (pcm.byteLength / 2 / SAMPLE_RATE) * 1000;
      this.transmit(AUDIO, pcm, time);
      this.audioBytes += pcm.byteLength;
    };
    source.connect(this.capture);
    // Connected to the output (it writes silence) so the browser keeps pulling audio through it.
    this.capture.connect(this.audio.destination);
    await this.audio.resume();
  }

  /** The microphone at 48 kHz (the context resamples), 20 ms at a time, through an Opus
   * AudioEncoder. Packets are timed by their sample count from the first one's capture time, in
   * µs since the epoch: continuous, on the video's clock. */
  async startOpus() {
    this.audio = new AudioContext({ sampleRate: OPUS_RATE });
    await this.audio.audioWorklet.addModule("/static/worklet.js");
    const source = this.audio.createMediaStreamSource(this.media);
    this.capture = new AudioWorkletNode(this.audio, "f32-capture");
    const encoder = new AudioEncoder({
      output: (chunk, metadata) => {
        const description = metadata?.decoderConfig?.description;
        if (description && this.opusHeadChecked === null) {
          this.opusHeadChecked = sameBytes(description, this.opusHead);
        }
        this.audioBytes += this.transmitEncoded(OPUS, chunk);
      },
      error: (error) => this.encoderFailed("audio", error),
    });
    encoder.configure(opusConfig);
    this.audioEncoder = encoder;
    let origin = null;
    let samples = 0;
    this.capture.port.onmessage = (event) => {
      if (!this.running || encoder.state !== "configured") return;
      const data = event.data;
      // The chunk's first sample was taken its length ago.
      origin ??= captureNow() - (data.length / OPUS_RATE) * 1000;
      const timestamp = Math.round(origin * 1000 + (samples * 1e6) / OPUS_RATE);
      samples += data.length;
      const audio = new AudioData({
        format: "f32", sampleRate: OPUS_RATE, numberOfFrames: data.length, numberOfChannels: 1,
        timestamp, data,
      });
      encoder.encode(audio);
      audio.close();
    };
    source.connect(this.capture);
    this.capture.connect(this.audio.destination);
    await this.audio.resume();
  }

  /** Whatever the encoders still hold goes out (before CLOSE); then they are closed. */
  async flushEncoders() {
    for (const encoder of [this.videoEncoder, this.audioEncoder]) {
      if (!encoder || encoder.state === "closed") continue;
      try {
        if (encoder.state === "configured") await Promise.race([encoder.flush(), sleep(3000)]);
      } catch {
        // an encoder that failed has said so (onError)
      }
      if (encoder.state !== "closed") encoder.close();
    }
  }

  elapsed() {
    return this.startedAt ? (performance.now() - this.startedAt) / 1000 : 0;
  }

  /** Seconds of capture kept for the server, oldest first. */
  buffered() {
    return this.outbox.span(captureNow());
  }

  /** Stop capturing and end the recording with CLOSE: at once when connected, else once the
   * connection is back and what it lacked is sent. Fires with how it ended (null: it never
   * started). */
  async stop() {
    const started = this.running;
    this.running = false;
    this.stopping = true;
    clearTimeout(this.timer);
    this.capture?.disconnect();
    await this.flushEncoders();
    await this.audio?.close();
    for (const track of this.media?.getTracks() || []) track.stop();
    this.preview.srcObject = null;
    this.preview.classList.remove("on");
    if (this.outcome) return this.outcome;
    if (!started) {
      this.ws?.close();
      return null;
    }
    if (!this.reconnecting && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ eventType: "CLOSE" }));
    }
    return await this.ended;
  }
}
