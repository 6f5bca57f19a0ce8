// Going live: the camera and microphone streamed to the daemon in the timed binary STREAM form
// (kind 0x11/0x12, seq, captureTime, chunk). With resume (the server gives a resumeToken), every
// chunk is kept until an ACK says it is in the recording, so a dropped connection is resumed and
// the chunks it lost are sent again: one recording, every chunk once.

const VIDEO = 0x11;
const AUDIO = 0x12;
const HEADER = 13; // kind byte, seq (uint32 big-endian), captureTime (float64 big-endian, ms)
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
    this.next = { [VIDEO]: 0, [AUDIO]: 0 };
    this.droppedFrames = 0;
    this.droppedAudioMs = 0;
  }

  /** The next chunk of ``kind``, numbered and framed; kept when ``keep`` (resume is on). */
  add(kind, buffer, time, keep) {
    const seq = this.next[kind]++;
    const message = new Uint8Array(HEADER + buffer.byteLength);
    const view = new DataView(message.buffer);
    view.setUint8(0, kind);
    view.setUint32(1, seq);
    view.setFloat64(5, time);
    message.set(new Uint8Array(buffer), HEADER);
    if (keep) {
      this.chunks.push({ kind, seq, time, message });
      this.bound(time);
    }
    return message;
  }

  /** ``{"video": seq|null, "audio": seq|null}``: everything up to these is in the recording. */
  acknowledge(ack) {
    const safe = { [VIDEO]: ack.video ?? -1, [AUDIO]: ack.audio ?? -1 };
    this.chunks = this.chunks.filter((chunk) => chunk.seq > safe[chunk.kind]);
  }

  bound(now) {
    const old = (chunk, kind, keep) => chunk.kind === kind && chunk.time < now - keep;
    const before = this.chunks.length;
    this.chunks = this.chunks.filter((chunk) => !old(chunk, VIDEO, KEEP_VIDEO_MS));
    this.droppedFrames += before - this.chunks.length;
    for (const chunk of this.chunks.filter((c) => old(c, AUDIO, KEEP_AUDIO_MS))) {
      this.droppedAudioMs += ((chunk.message.byteLength - HEADER) / 2 / SAMPLE_RATE) * 1000;
    }
    this.chunks = this.chunks.filter((chunk) => !old(chunk, AUDIO, KEEP_AUDIO_MS));
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
  constructor({ fps, grace, url, protocols, preview, onStatus, onError }) {
    Object.assign(this, { fps, grace, url, protocols, preview, onStatus, onError });
    this.outbox = new Outbox();
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
    return this.outbox.next[VIDEO];
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
    this.onStatus("connecting", "Connecting…");
    const connected = await this.connect({ eventType: "CONNECT", id, resume: true });
    this.name = connected.recording;
    this.resumeToken = connected.resumeToken ?? null;
    this.running = true;
    await this.startAudio();
    this.startVideo();
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
        }
      };
    });
  }

  attach(ws) {
    this.ws = ws;
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.eventType === "ACK") this.outbox.acknowledge(message);
      else if (message.eventType === "ERROR") this.onError(message);
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
    const message = this.outbox.add(kind, buffer, time, this.resumeToken !== null);
    if (!this.reconnecting && this.ws.readyState === WebSocket.OPEN) this.ws.send(message);
  }

  startVideo() {
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

  async startAudio() {
    if (this.media.getAudioTracks().length === 0) return;
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
