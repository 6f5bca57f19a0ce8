"""The text of the playlists: RFC 8216bis (HLS, 2nd edition) with its Low-Latency tags.

A session has one multivariant playlist naming a video media playlist and, when the session has
sound, an audio rendition of its own (the two are recorded into separate files, so they are
two media playlists, as HLS allows: EXT-X-MEDIA). Every URI is relative to the playlist and
carries the query the playlist was asked with (a ``token`` for players that cannot set a
header: a player resolves a relative URI without the playlist's query). Pure: no Twisted.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from livestream.hls.fmp4 import TrackInfo
from livestream.hls.segments import Segmenter

# EXT-X-PART and its attributes need version 9 of the protocol (RFC 8216bis §7).
VERSION = 9
# How far behind the live edge a player holds, in part targets (§4.4.3.8: at least two; three is
# what the RFC recommends and what players that follow it use).
HOLD_BACK_PARTS = 3
AUDIO_GROUP = "audio"


def _date(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def media(
    segmenter: Segmenter,
    uri: str,
    query: str = "",
    origin: float | None = None,
    *,
    ended: bool = False,
) -> str:
    """The media playlist of a track: ``uri`` is the track's directory (``video``), ``query``
    what every URI carries (``?token=...`` or ``""``); ``origin`` the wall-clock time (epoch
    seconds) of the track's time 0, for EXT-X-PROGRAM-DATE-TIME."""
    scale = segmenter.timescale
    segments = list(segmenter.segments)
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{VERSION}",
        f"#EXT-X-TARGETDURATION:{segmenter.target}",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,"
        f"PART-HOLD-BACK={HOLD_BACK_PARTS * segmenter.part_target:.3f}",
        f"#EXT-X-PART-INF:PART-TARGET={segmenter.part_target:.3f}",
        f"#EXT-X-MEDIA-SEQUENCE:{segments[0].msn if segments else 0}",
    ]
    if segmenter.all_independent:
        lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
    listed = segmenter.listed_parts()
    init = None
    for segment in segments:
        if segment.init != init:
            init = segment.init
            lines.append(f'#EXT-X-MAP:URI="{uri}/init{init}.mp4{query}"')
        if origin is not None:
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_date(origin + segment.start / scale)}")
        if segment.msn in listed:
            for part in segment.parts:
                if not part.complete:
                    break
                independent = ",INDEPENDENT=YES" if part.independent else ""
                lines.append(
                    f"#EXT-X-PART:DURATION={part.duration / scale:.5f},"
                    f'URI="{uri}/p{part.number}.m4s{query}"{independent}'
                )
        if segment.complete:
            lines.append(f"#EXTINF:{segment.duration / scale:.5f},")
            lines.append(f"{uri}/s{segment.msn}.m4s{query}")
    if ended:
        lines.append("#EXT-X-ENDLIST")
    else:
        lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{uri}/p{segmenter.next_part}.m4s{query}"')
    return "\n".join(lines) + "\n"


def multivariant(
    video: TrackInfo | None, audio: TrackInfo | None, bandwidth: int, query: str = ""
) -> str:
    """The playlist a player is given: the video (with its audio rendition), or the sound alone.
    ``bandwidth`` is the peak bits a second of the segments so far (an estimate, as it must
    be for a live stream)."""
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{VERSION}"]
    codecs = [t.codec for t in (video, audio) if t is not None]
    attributes = [f"BANDWIDTH={max(1, bandwidth)}", f'CODECS="{",".join(codecs)}"']
    if video is not None and video.width and video.height:
        attributes.append(f"RESOLUTION={video.width}x{video.height}")
    if video is not None and audio is not None:
        lines.append(
            f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="{AUDIO_GROUP}",NAME="audio",DEFAULT=YES,'
            f'AUTOSELECT=YES,URI="audio.m3u8{query}"'
        )
        attributes.append(f'AUDIO="{AUDIO_GROUP}"')
    lines.append("#EXT-X-STREAM-INF:" + ",".join(attributes))
    lines.append(("video" if video is not None else "audio") + f".m3u8{query}")
    return "\n".join(lines) + "\n"


def peak_bandwidth(segmenter: Segmenter) -> int:
    """Bits a second of the window's biggest segment (or part, before one is complete)."""
    best = 0.0
    for segment in segmenter.segments:
        seconds = segment.duration / segmenter.timescale
        size = sum(chunk.length for part in segment.parts for chunk in part.chunks)
        if seconds > 0:
            best = max(best, size * 8 / seconds)
    return math.ceil(best)
