// Captures the microphone as PCM s16le, 44.1 kHz, mono (the protocol's audio format), resampling
// linearly when the audio device runs at another rate (48 kHz is common): "pcm-capture". For the
// Opus encoder, "f32-capture" gives mono float samples at the context's own rate (the page opens
// it at 48 kHz) in 20 ms chunks.
const TARGET_RATE = 44100;
const CHUNK = 1024; // samples per message to the page: about 23 ms

class PcmCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / TARGET_RATE; // input samples per output sample
    this.pos = 0; // where the next output sample falls, in input samples from this block's start
    this.last = 0; // the previous block's last input sample (position -1)
    this.chunk = new DataView(new ArrayBuffer(CHUNK * 2));
    this.count = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const length = channels[0].length;
    const mono = new Float32Array(length);
    for (const channel of channels) {
      for (let i = 0; i < length; i++) mono[i] += channel[i] / channels.length;
    }
    let p = this.pos;
    while (p < length - 1) {
      const i = Math.floor(p);
      const a = i < 0 ? this.last : mono[i];
      this.push(a + (mono[i + 1] - a) * (p - i));
      p += this.step;
    }
    this.pos = p - length;
    this.last = mono[length - 1];
    return true;
  }

  push(value) {
    const s = Math.max(-1, Math.min(1, value));
    this.chunk.setInt16(this.count * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);
    if (++this.count === CHUNK) {
      this.port.postMessage(this.chunk.buffer, [this.chunk.buffer]);
      this.chunk = new DataView(new ArrayBuffer(CHUNK * 2));
      this.count = 0;
    }
  }
}

registerProcessor("pcm-capture", PcmCapture);

const F32_CHUNK_MS = 20;

class F32Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.size = Math.round((sampleRate * F32_CHUNK_MS) / 1000);
    this.chunk = new Float32Array(this.size);
    this.count = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    for (let i = 0; i < channels[0].length; i++) {
      let sum = 0;
      for (const channel of channels) sum += channel[i];
      this.chunk[this.count++] = sum / channels.length;
      if (this.count === this.size) {
        this.port.postMessage(this.chunk, [this.chunk.buffer]);
        this.chunk = new Float32Array(this.size);
        this.count = 0;
      }
    }
    return true;
  }
}

registerProcessor("f32-capture", F32Capture);
