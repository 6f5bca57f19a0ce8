"""The live HLS of a session, over HTTP: ``/live/<recording>/index.m3u8`` and what it names.

- ``index.m3u8``: the multivariant playlist (the video, and its audio rendition when the
  session has sound written live: AAC from ``--mux-audio``, or the client's Opus).
- ``video.m3u8``, ``audio.m3u8``: the media playlists, Low-Latency HLS. ``_HLS_msn`` and
  ``_HLS_part`` make a blocking reload (RFC 8216bis §6.2.5.2): the answer waits until the
  playlist holds that part (or segment), at most three target durations, then a 503.
- ``video/init<n>.mp4``, ``video/p<n>.m4s`` (a part), ``video/s<n>.m4s`` (a segment), and so
  for ``audio/``: a part not yet complete is waited for as the playlist's preload hint asks.

Every answer carries CORS headers for an Origin the page's rules allow (403 for another), so a
page elsewhere can play it; a player that cannot set a header gives the token in the query, and
every URI of the playlists it gets carries that query on (the access log blanks it).
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Callable
from typing import Protocol, cast
from urllib.parse import quote

from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.static import NoRangeStaticProducer

from livestream.auth.access import Access
from livestream.hls import playlist
from livestream.hls.streams import LiveStream, LiveStreams
from livestream.hls.track import LiveTrack
from livestream.hls.waiting import TooMany
from livestream.web.answers import error_answer

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
INIT_TYPE = "video/mp4"
MEDIA_TYPE = "video/iso.segment"
# A blocking request waits at most this many target durations (RFC 8216bis §6.2.5.2).
WAIT_TARGETS = 3
# Before the first segment is whole: how long a playlist waits for it.
FIRST_WAIT = 6.0
TRACKS = ("video", "audio")
_MEDIA_FILE = re.compile(r"^(init|p|s)(0|[1-9][0-9]{0,9})\.(mp4|m4s)$")
_KINDS = {"init": "init", "p": "part", "s": "segment"}
_NUMBER = re.compile(r"^(0|[1-9][0-9]{0,9})$")


def live_playlist(name: str) -> str:
    """The path of a live session's playlist, as CONNECTED and /api/sessions name it."""
    return f"/live/{name}/index.m3u8"


class CrossOrigin(Protocol):
    _access: Access


def cross_origin(route: Callable) -> Callable:
    """CORS for the live routes, before the token check so that a refusal can be read too: an
    Origin the page's rules refuse gets a 403; an allowed one is named back."""

    @functools.wraps(route)
    def checked(self: CrossOrigin, request: Request, *args: object, **kwargs: object) -> object:
        origin = request.getHeader("origin")
        if origin is not None:
            if not self._access.origin_allowed(origin):
                return error_answer(request, 403, "forbidden", "origin not allowed")
            request.setHeader("access-control-allow-origin", origin)
            request.setHeader("vary", "Origin")
            request.setHeader("access-control-expose-headers", "content-length, content-type")
        return route(self, request, *args, **kwargs)

    return checked


def preflight(request: Request) -> bytes:
    """The answer to a CORS preflight (a player sending ``Authorization`` from another page)."""
    request.setResponseCode(204)
    request.setHeader("access-control-allow-methods", "GET, HEAD, OPTIONS")
    request.setHeader("access-control-allow-headers", "authorization")
    request.setHeader("access-control-max-age", "600")
    return b""


def _query(request: Request) -> str:
    """What every URI of a playlist carries: the token it was asked with, if in the query."""
    args = cast("dict[bytes, list[bytes]]", request.args or {})
    values = args.get(b"token")
    if not values:
        return ""
    return "?token=" + quote(values[0].decode("ascii", "replace"), safe="")


class BadRequest(ValueError):
    pass


def _blocking(request: Request) -> tuple[int | None, int | None]:
    """``_HLS_msn`` and ``_HLS_part`` of a playlist request."""
    args = cast("dict[bytes, list[bytes]]", request.args or {})

    def number(name: bytes) -> int | None:
        values = args.get(name)
        if not values:
            return None
        text = values[0].decode("ascii", "replace")
        if _NUMBER.fullmatch(text) is None:
            raise BadRequest(f"{name.decode()} must be a whole number, not {text[:20]!r}")
        return int(text)

    msn, part = number(b"_HLS_msn"), number(b"_HLS_part")
    if part is not None and msn is None:
        raise BadRequest("_HLS_part needs _HLS_msn")
    return msn, part


def _no_stream(request: Request) -> bytes:
    return error_answer(request, 404, "not_found", "no live session of that name")


class _Body(Resource):
    """A body written as the connection takes it (a pull producer), not handed to it whole: a
    player that stops reading, or pipelines hundreds of requests it never reads, holds one
    buffer's worth of one answer, since its connection reads no next request until this one is
    finished. The bytes themselves are the track's, shared with every other player."""

    isLeaf = True

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data = data

    def render_GET(self, request: Request) -> bytes | int:
        if request.method == b"HEAD":
            return b""
        NoRangeStaticProducer(request, io.BytesIO(self._data)).start()
        return NOT_DONE_YET

    render_HEAD = render_GET


class LiveHls:
    """Answers the live routes from the streams players asked for."""

    def __init__(self, streams: LiveStreams) -> None:
        self._streams = streams

    def _answer(self, request: Request, kind: str, body: bytes, content_type: str) -> None:
        """With its length: a part is written whole, never chunked. A playlist changes with
        every part; what it names never does."""
        request.setHeader("content-type", content_type)
        request.setHeader("cache-control", "no-cache" if kind == "playlist" else "max-age=60")
        request.setHeader("content-length", str(len(body)))
        self._streams.served(kind, len(body))

    def _playlist(self, request: Request, text: str) -> bytes:
        body = text.encode("ascii")
        self._answer(request, "playlist", body, PLAYLIST_TYPE)
        return body

    def _unavailable(self, request: Request, message: str) -> bytes:
        self._streams.timeouts += 1
        request.setHeader("retry-after", "1")
        return error_answer(request, 503, "not_ready", message)

    def _find(self, request: Request, name: str) -> LiveStream | bytes:
        stream = self._streams.find(name)
        if stream is None:
            return _no_stream(request)
        return stream

    def _published(self, request: Request, stream: LiveStream) -> bytes:
        """The session's recording is published: its URL points to it. (The media playlists,
        parts and segments are still served a little while, to the players finishing them.)"""
        outcome = stream.published
        assert outcome is not None
        if outcome.video is None:
            return _no_stream(request)
        location = f"/recordings/video/{outcome.video}"
        request.setHeader("location", location)
        return error_answer(request, 303, "published", f"the recording is at {location}")

    async def playlist(self, request: Request, name: str, filename: str) -> bytes:
        found = self._find(request, name)
        if isinstance(found, bytes):
            return found
        stream = found
        if filename == "index.m3u8":
            return await self._multivariant(request, stream)
        track_name = filename.removesuffix(".m3u8")
        if track_name not in TRACKS or not filename.endswith(".m3u8"):
            return _no_stream(request)
        try:
            msn, part = _blocking(request)
        except BadRequest as e:
            return error_answer(request, 400, "bad_query", str(e))
        track = stream.video if track_name == "video" else stream.audio
        if not await self._wait(track, lambda: track.playable or track.broken, FIRST_WAIT):
            return self._unavailable(request, "the session has no media of that kind yet")
        segmenter = track.segmenter
        if segmenter is None:  # broken before its first fragment
            return _no_stream(request)
        if msn is not None:
            if msn > segmenter.last_msn + 2:
                return error_answer(
                    request, 400, "bad_query", "_HLS_msn is more than two segments ahead"
                )
            timeout = WAIT_TARGETS * segmenter.target
            if not await self._wait(track, lambda: segmenter.has(msn, part), timeout):
                return self._unavailable(request, "the part asked for did not come in time")
        if track.broken and not segmenter.segments:
            return _no_stream(request)
        text = playlist.media(
            segmenter, track_name, _query(request), stream.origin, ended=track.ended
        )
        return self._playlist(request, text)

    async def _multivariant(self, request: Request, stream: LiveStream) -> bytes:
        if stream.published is not None:
            return self._published(request, stream)
        video, audio, session = stream.video, stream.audio, stream.session

        def ready() -> bool:
            if stream.ended:
                return True
            return video.playable and (not session.live_sound or audio.playable)

        if not await self._wait(video, ready, FIRST_WAIT) and video.info is None:
            return self._unavailable(request, "the session has no video yet")
        if video.info is None and audio.info is None:
            return _no_stream(request)
        bandwidth = max(
            playlist.peak_bandwidth(t.segmenter) for t in stream.tracks if t.segmenter is not None
        )
        text = playlist.multivariant(video.info, audio.info, bandwidth, _query(request))
        return self._playlist(request, text)

    async def media(
        self, request: Request, name: str, track_name: str, filename: str
    ) -> bytes | IResource:
        found = self._find(request, name)
        if isinstance(found, bytes):
            return found
        match = _MEDIA_FILE.fullmatch(filename)
        if track_name not in TRACKS or match is None:
            return _no_stream(request)
        kind, number, suffix = match.group(1), int(match.group(2)), match.group(3)
        if (suffix == "mp4") != (kind == "init"):
            return _no_stream(request)
        track = found.video if track_name == "video" else found.audio
        data: bytes | None
        if kind == "init":
            data = track.init_bytes(number)
        elif kind == "s":
            data = track.segment_bytes(number)
        else:
            segmenter = track.segmenter
            if segmenter is not None and number == segmenter.next_part:
                # The preload hint's part: wait for it.
                timeout = WAIT_TARGETS * segmenter.target

                def whole() -> bool:
                    return track.ended or segmenter.part(number) is not None

                if not await self._wait(track, whole, timeout):
                    return self._unavailable(request, "the part asked for did not come in time")
            data = track.part_bytes(number)
        if data is None:
            return error_answer(request, 404, "not_found", "not in the live window")
        content_type = INIT_TYPE if kind == "init" else MEDIA_TYPE
        self._answer(request, _KINDS[kind], data, content_type)
        return _Body(data)

    async def _wait(self, track: LiveTrack, ready: Callable[[], bool], timeout: float) -> bool:
        try:
            return await track.wait(ready, timeout)
        except TooMany:
            return False
