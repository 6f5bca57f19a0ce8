// HLS playlists read for the page's player (RFC 8216bis, with the Low-Latency tags): the
// multivariant playlist (which tracks, and in what codecs) and a media playlist (its parts, when
// each was shown live, the preload hint, whether it ended). Only what the player uses; every URI
// is resolved against the playlist's own URL, so the token it carries stays on. No DOM.

// The first letters of the video codecs an HLS CODECS attribute may name (the others are sound).
const VIDEO_CODEC = /^(avc[13]|hvc1|hev1|av01|vp09)\./;

/** `KEY=value,KEY="quoted, with commas"` as an object. */
function attributes(text) {
  const found = {};
  for (const [, key, value] of text.matchAll(/([A-Z0-9-]+)=("[^"]*"|[^,]*)/g)) {
    found[key] = value.startsWith('"') ? value.slice(1, -1) : value;
  }
  return found;
}

function tag(line, name) {
  return line.startsWith(`${name}:`) ? line.slice(name.length + 1) : null;
}

function lines(text) {
  return text.split(/\r?\n/).map((line) => line.trim()).filter(Boolean);
}

/** The tracks a multivariant playlist names, each `{kind, url, codecs, type}` (``type`` the MSE
 * type: `video/mp4; codecs="avc1.42c016"`): the first variant, and its audio rendition when it
 * has one (the daemon records sound apart from the picture). A variant of sound alone is the
 * audio track. */
export function readMultivariant(text, base) {
  const all = lines(text);
  if (all[0] !== "#EXTM3U") throw new Error("not an HLS playlist");
  const at = all.findIndex((line) => line.startsWith("#EXT-X-STREAM-INF:"));
  if (at < 0 || !all[at + 1] || all[at + 1].startsWith("#")) throw new Error("no variant in the playlist");
  const variant = attributes(tag(all[at], "#EXT-X-STREAM-INF"));
  const codecs = (variant.CODECS ?? "").split(",").map((c) => c.trim()).filter(Boolean);
  const pictures = codecs.filter((c) => VIDEO_CODEC.test(c));
  const sounds = codecs.filter((c) => !VIDEO_CODEC.test(c));
  const renditions = all
    .map((line) => tag(line, "#EXT-X-MEDIA"))
    .filter((media) => media !== null)
    .map(attributes)
    .filter((media) => media.TYPE === "AUDIO" && media.URI && media["GROUP-ID"] === variant.AUDIO);
  const rendition = renditions.find((media) => media.DEFAULT === "YES") ?? renditions[0];
  const track = (kind, uri, names) => ({
    kind,
    url: new URL(uri, base).href,
    codecs: names,
    type: `${kind}/mp4; codecs="${names.join(",")}"`,
  });
  if (rendition && pictures.length) {
    return [track("video", all[at + 1], pictures), track("audio", rendition.URI, sounds)];
  }
  return [track(pictures.length ? "video" : "audio", all[at + 1], codecs)];
}

/** A media playlist: its ``parts`` in order, each `{msn, index, url, map, duration,
 * independent, date}` (``date``: the wall-clock time, ms since the epoch, of its first sample,
 * from EXT-X-PROGRAM-DATE-TIME; NaN without one), the segments known to be complete
 * (``complete``, their media sequence numbers), ``hint`` (the preload hint's URL, or null),
 * ``ended`` (EXT-X-ENDLIST), ``nextMsn`` (the segment after the last complete one) and the
 * target durations. */
export function readMedia(text, base) {
  const playlist = { parts: [], complete: new Set(), hint: null, ended: false, target: 1, partTarget: 0.2 };
  const all = lines(text);
  if (all[0] !== "#EXTM3U") throw new Error("not an HLS playlist");
  let msn = 0;
  let index = 0;
  let map = null;
  let date = NaN; // of the segment being read
  let into = 0; // seconds into it
  let duration = null; // of the segment whose URI comes next
  for (const line of all) {
    let value;
    if ((value = tag(line, "#EXT-X-MEDIA-SEQUENCE")) !== null) msn = Number(value);
    else if ((value = tag(line, "#EXT-X-TARGETDURATION")) !== null) playlist.target = Number(value);
    else if ((value = tag(line, "#EXT-X-PART-INF")) !== null) {
      playlist.partTarget = Number(attributes(value)["PART-TARGET"]);
    } else if ((value = tag(line, "#EXT-X-MAP")) !== null) map = new URL(attributes(value).URI, base).href;
    else if ((value = tag(line, "#EXT-X-PROGRAM-DATE-TIME")) !== null) {
      date = Date.parse(value);
      into = 0;
    } else if ((value = tag(line, "#EXT-X-PART")) !== null) {
      const part = attributes(value);
      const seconds = Number(part.DURATION);
      playlist.parts.push({
        msn, index, map, url: new URL(part.URI, base).href, duration: seconds,
        independent: part.INDEPENDENT === "YES", date: date + into * 1000,
      });
      index++;
      into += seconds;
    } else if ((value = tag(line, "#EXTINF")) !== null) duration = Number(value.split(",")[0]);
    else if ((value = tag(line, "#EXT-X-PRELOAD-HINT")) !== null) {
      const hint = attributes(value);
      if (hint.TYPE === "PART") playlist.hint = new URL(hint.URI, base).href;
    } else if (line === "#EXT-X-ENDLIST") playlist.ended = true;
    else if (!line.startsWith("#") && duration !== null) {
      // A segment's URI: the segment is complete; the next one follows it in time.
      playlist.complete.add(msn);
      date += duration * 1000;
      msn++;
      index = 0;
      into = 0;
      duration = null;
    }
  }
  playlist.nextMsn = msn; // of the segment after the last complete one
  return playlist;
}

/** `[msn, part]` of the part after ``part`` (a blocking reload's `_HLS_msn` and `_HLS_part`):
 * the next of its segment, or the first of the next segment once its own is complete; without
 * ``part``, the first of the segment being made. */
export function nextPart(playlist, part) {
  if (!part) return [playlist.nextMsn, 0];
  return playlist.complete.has(part.msn) ? [part.msn + 1, 0] : [part.msn, part.index + 1];
}

/** The newest part a picture can start from (INDEPENDENT=YES), or null. */
export function newestIndependent(playlist) {
  return playlist.parts.findLast((part) => part.independent) ?? null;
}
