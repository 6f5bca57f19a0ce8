// What the page encodes itself with WebCodecs, and when: H.264 for the camera and Opus for the
// microphone where the browser can, so the daemon records them as they came. No DOM here.

// Constrained baseline, level 3.1: Chromium encodes it in software (OpenH264) where high profile
// needs hardware, and every player decodes it.
export const H264_CODEC = "avc1.42e01f";
export const OPUS_RATE = 48000;
// Opus packets of 20 ms (WebCodecs' default): 960 samples at 48 kHz.
export const OPUS_FRAME = 960;
// What Chromium's Opus encoder (libopus at 48 kHz) says in its decoderConfig: its lookahead.
const OPUS_PRE_SKIP = 312;

/** The VideoEncoder configuration for the camera at ``width`` x ``height`` and ``fps``. Annex B
 * puts SPS and PPS in-band on every keyframe (the avcC form gives them once, and Chromium's
 * software encoder once emitted keyframes it did not describe). The default latency mode,
 * "quality", encodes every frame; "realtime" drops some silently. */
export function h264Config(width, height, fps) {
  return {
    codec: H264_CODEC,
    width,
    height,
    framerate: fps,
    bitrate: Math.round(width * height * fps * 0.2), // about 1 Mbit/s for 640x480 at 15 fps
    avc: { format: "annexb" },
  };
}

export const opusConfig = { codec: "opus", sampleRate: OPUS_RATE, numberOfChannels: 1, bitrate: 48_000 };

/**
 * What to send: ``{video: "h264"|"jpeg", audio: "opus"|"pcm", why}`` (``why``: why not H.264,
 * or null). ``force`` is what the page's URL asks for (``?codec=jpeg``: JPEG and PCM, the seed's
 * path; ``?audio=pcm``: PCM under H.264). Opus goes only with H.264: a JPEG session keeps the
 * seed's PCM, exactly as before.
 */
export async function chooseCodecs(width, height, fps, force = {}) {
  const seed = (why) => ({ video: "jpeg", audio: "pcm", why });
  if (force.video === "jpeg") return seed("JPEG was asked for (?codec=jpeg)");
  if (typeof VideoEncoder === "undefined") return seed("this browser has no WebCodecs VideoEncoder");
  try {
    const { supported } = await VideoEncoder.isConfigSupported(h264Config(width, height, fps));
    if (!supported) return seed(`this browser cannot encode ${H264_CODEC}`);
  } catch (error) {
    return seed(`this browser cannot encode ${H264_CODEC} (${error.message})`);
  }
  let audio = "pcm";
  if (force.audio !== "pcm" && typeof AudioEncoder !== "undefined") {
    try {
      if ((await AudioEncoder.isConfigSupported(opusConfig)).supported) audio = "opus";
    } catch {
      // PCM then
    }
  }
  return { video: "h264", audio, why: null };
}

/**
 * The Opus identification header (RFC 7845 §5.1), 19 bytes: "OpusHead", version 1, channels,
 * pre-skip (LE), input rate (LE), gain 0, mapping family 0. Built here rather than taken from the
 * encoder's first output: CONNECT, which carries it, goes before any audio is encoded (and a
 * page without a microphone sends none); Chromium's encoder gives these same bytes, which the
 * page checks when its first packet comes.
 */
export function opusHead(channels = 1, preSkip = OPUS_PRE_SKIP, rate = OPUS_RATE) {
  const head = new Uint8Array(19);
  const view = new DataView(head.buffer);
  head.set([..."OpusHead"].map((c) => c.charCodeAt(0)));
  view.setUint8(8, 1);
  view.setUint8(9, channels);
  view.setUint16(10, preSkip, true);
  view.setUint32(12, rate, true);
  view.setInt16(16, 0, true);
  view.setUint8(18, 0);
  return head;
}

export function base64(bytes) {
  return btoa(String.fromCharCode(...bytes));
}

export function sameBytes(a, b) {
  const x = new Uint8Array(a.buffer ?? a, a.byteOffset ?? 0, a.byteLength);
  const y = new Uint8Array(b.buffer ?? b, b.byteOffset ?? 0, b.byteLength);
  return x.length === y.length && x.every((byte, i) => byte === y[i]);
}
