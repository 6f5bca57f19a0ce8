"""The page in a real browser: Debian's Chromium driven by Playwright (tests.support.chromium),
with Chromium's fake camera (a moving test pattern) and fake microphone (a beep). ``./manage
test`` installs Chromium; without it (or without Playwright) these tests skip and say why.

Playwright's sync API runs in a thread (``deferToThread``) while the daemon runs in this process's
reactor; every wait in the browser is bounded, and the browser is closed whatever happens.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread, deferToThread
from twisted.trial.unittest import TestCase

from bench import numbered
from livestream.auth.access import Access
from livestream.auth.tokens import Verifier, mint
from livestream.hls import playlist
from livestream.hls.fmp4 import FragmentInfo, TrackInfo
from livestream.hls.segments import Chunk, Segmenter
from livestream.sessions.outcome import DISCONNECT
from tests.support.chromium import SKIP, browser
from tests.support.daemon import ROOT
from tests.support.feeders import FPS, feed_h264, feed_jpeg
from tests.support.http import get_json
from tests.support.media import (
    ffmpeg_exe,
    h264_access_units,
    jpeg_frames,
    pcm,
    video_facts,
    wav_facts,
)
from tests.support.server import start_server
from tests.support.waiting import until
from tests.support.websocket import CLOSE_MSG, connect_msg, open_client, record

if TYPE_CHECKING:
    from playwright.sync_api import Page

SCREENSHOT = ROOT / "build" / "screenshots" / "page.png"
RECONNECTING = ROOT / "build" / "screenshots" / "reconnecting.png"
NOT_RESUMED = ROOT / "build" / "screenshots" / "not-resumed.png"
WATCHING = ROOT / "build" / "screenshots" / "watching.png"
LISTED = "#recording-list li[data-stem]"
SECRET = b"0123456789abcdef0123456789abcdef-browser"


def open_page(page: Page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]")


def go_live(
    url: str,
    seconds: float,
    during: Callable[[Page], None] | None = None,
    before: Callable[[Page], None] | None = None,
) -> dict:
    """Open the page, go live for ``seconds`` (``before`` runs first, ``during`` meanwhile),
    stop; what the page and the test's clock saw."""
    with browser() as page:
        open_page(page, url)
        if before is not None:
            before(page)
        page.click("#go")
        page.wait_for_selector("#live-status[data-state=recording]")
        started = time.monotonic()
        # What the server says the page sends (its own word, not the page's).
        sessions = page.evaluate(
            """() => {
                const token = localStorage.getItem("livestream.token");
                const headers = token ? { Authorization: `Bearer ${token}` } : {};
                return fetch("/api/sessions", { headers }).then((r) => r.json());
            }"""
        )["sessions"]
        if during is not None:
            during(page)
        # Waiting in Playwright, so that its event handlers (routes) run meanwhile.
        page.wait_for_timeout(max(0.0, started + seconds - time.monotonic()) * 1000)
        page.click("#stop")
        wall = time.monotonic() - started
        page.wait_for_selector("#live-status[data-state=done]")
        status = page.locator("#live-status")
        finished = page.locator("#finished-recording")
        counts = (
            "frames",
            "skipped",
            "audio-bytes",
            "audio-chunks",
            "resumes",
            "resent",
            "dropped-frames",
            "dropped-audio-ms",
        )
        return {
            "wall": wall,
            "seconds": float(status.get_attribute("data-seconds")),
            **{key.replace("-", "_"): int(status.get_attribute(f"data-{key}")) for key in counts},
            "video": finished.get_attribute("data-video"),
            "audio": finished.get_attribute("data-audio"),
            "video_codec": status.get_attribute("data-video-codec"),
            "audio_codec": status.get_attribute("data-audio-codec"),
            "keyframe_requests": json.loads(status.get_attribute("data-keyframe-requests")),
            "server_errors": json.loads(status.get_attribute("data-server-errors")),
            "opus_head_checked": status.get_attribute("data-opus-head-checked"),
            "path": page.text_content("#live-path"),
            "sessions": sessions,
            "errors": page.errors,
        }  # fmt: skip


# What the page's Watch shows now: frames presented (the page's own count, from
# requestVideoFrameCallback, and the video element's), its latency readout (ms), the sound
# decoded (bytes) and the picture's width.
SHOWN = """() => {
    const viewer = document.querySelector("#viewer");
    const video = document.querySelector("#viewer-video");
    return {
        frames: Number(viewer.dataset.frames),
        presented: video.getVideoPlaybackQuality().totalVideoFrames,
        latency: viewer.dataset.latencyMs ? Number(viewer.dataset.latencyMs) : null,
        sound: video.webkitAudioDecodedByteCount,
        width: video.videoWidth,
    };
}"""
# A second of frames shown: the start (at the live edge) is over.
SHOWING = "Number(document.querySelector('#viewer').dataset.frames) >= 15"


def watched_live(page: Page) -> Callable[[], dict]:
    """Keep the URLs of the live routes the page asks for and the WebSockets it opens, from
    now on; what returns them, with what the viewer panel says."""
    asked: list[str] = []
    sockets: list[str] = []
    page.on("request", lambda r: "/live/" in r.url and asked.append(r.url))
    page.on("websocket", lambda ws: sockets.append(ws.url))

    def seen() -> dict:
        viewer = page.locator("#viewer")
        return {
            "asked": list(asked),
            "sockets": list(sockets),
            "player": viewer.get_attribute("data-player"),
            "codec": viewer.get_attribute("data-video-codec"),
            "audio_codec": viewer.get_attribute("data-audio-codec"),
            "status": page.text_content("#viewer-status"),
            "readout": page.text_content("#viewer-latency"),
        }

    return seen


def watch(url: str, start: Callable[[Page], None]) -> dict:
    """Open the page, start watching with ``start``, and see what the Watch shows over the 2 s
    after its first second: frames, the latency readout (every 0.25 s), the sound."""
    with browser() as page:
        live = watched_live(page)
        open_page(page, url)
        start(page)
        page.wait_for_function(SHOWING)
        first = page.evaluate(SHOWN)
        latencies = []
        for _ in range(8):
            time.sleep(0.25)
            latencies.append(page.evaluate(SHOWN)["latency"])
        now = page.evaluate(SHOWN)
        return {
            **live(),
            "frames": now["frames"] - first["frames"],
            "presented": now["presented"] - first["presented"],
            "latencies": latencies,
            "sound": now["sound"] - first["sound"],
            "width": now["width"],
            "address": page.evaluate("location.href"),
            "errors": page.errors,
        }


# Reads the number of each frame the Watch shows off a canvas, as it is shown: [number, the
# wall clock then (ms), the page's latency readout then (ms), frames presented so far (a
# callback may come for two frames shown together: only the second is read)].
READ_NUMBERS = (
    numbered.JS_READER
    + """
window.numbers = [];
(() => {
    const video = document.querySelector("#viewer-video");
    const canvas = document.createElement("canvas");
    const context = canvas.getContext("2d", { willReadFrequently: true });
    const shown = (_, metadata) => {
        canvas.width = video.videoWidth;
        canvas.height = video.videoHeight;
        context.drawImage(video, 0, 0);
        const readout = Number(document.querySelector("#viewer").dataset.latencyMs);
        window.numbers.push([readNumber(context, canvas.width, canvas.height),
                             performance.timeOrigin + performance.now(), readout,
                             metadata.presentedFrames]);
        video.requestVideoFrameCallback(shown);
    };
    video.requestVideoFrameCallback(shown);
})();
"""
)


def watch_to_the_end(url: str, name: str, seconds: float) -> dict:
    """Open the page on the live view of ``name``, read the number of every frame it shows
    until the session ends (within ``seconds``), and wait for its recording in the list."""
    with browser() as page:
        live = watched_live(page)
        open_page(page, url)
        page.add_script_tag(content=READ_NUMBERS)
        page.wait_for_function("window.numbers.length >= 3 * 15")
        WATCHING.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(WATCHING), full_page=True)
        page.wait_for_selector("#viewer[data-phase=ended]", timeout=seconds * 1000)
        page.wait_for_selector(f"#recording-list li[data-stem='{name}']")
        return {**live(), "numbers": page.evaluate("window.numbers"),
                "sound": page.evaluate(SHOWN)["sound"], "errors": page.errors}  # fmt: skip


def give_token(page: Page, token: str) -> None:
    """Type ``token`` into the form the page shows when it needs one."""
    page.wait_for_selector("#token-form")
    page.fill("#token-input", token)
    page.click("#token-form button[type=submit]")


def play(page: Page, stem: str) -> int:
    """Wait for recording ``stem`` in the list and load every player of it until it knows its
    duration (the page says ``preload=none``, so nothing is fetched before); how many there are."""
    item = f"#recording-list li[data-stem='{stem}']"
    page.wait_for_selector(item)
    players = page.locator(f"{item} video, {item} audio")
    count = players.count()
    for i in range(count):
        players.nth(i).evaluate("m => { m.preload = 'metadata'; m.load(); }")
    page.wait_for_function(
        f'[...document.querySelectorAll("{item} video, {item} audio")]'
        ".every(media => media.readyState >= 1 && media.duration > 2.5)"
    )
    return count


def lists(page: Page, count: int, total: int | None) -> None:
    """Wait until the recordings list shows ``count`` sessions and says ``total`` recordings
    match (None: it says why it cannot list them)."""
    state = "ready" if total is not None else "error"
    page.wait_for_function(
        f"""() => document.querySelectorAll("{LISTED}").length === {count}
            && document.querySelector("#recordings").dataset.state === "{state}"
            && (document.querySelector("#recordings").dataset.total ?? null)
               === {json.dumps(None if total is None else str(total))}"""
    )


def listed(page: Page) -> list[str]:
    """The stems the recordings list shows, top to bottom."""
    return page.eval_on_selector_all(LISTED, "items => items.map(i => i.dataset.stem)")


def delete(page: Page, stem: str) -> list[tuple[str, str]]:
    """Click Delete on recording ``stem``, say yes to what the page asks, and wait until the
    list no longer shows it; the dialogs the page opened (type, message)."""
    item = f"#recording-list li[data-stem='{stem}']"
    dialogs: list[tuple[str, str]] = []

    def answer(dialog) -> None:
        dialogs.append((dialog.type, dialog.message))
        dialog.accept()

    page.on("dialog", answer)
    page.click(f"{item} button.danger")
    page.wait_for_selector(item, state="detached")
    page.wait_for_selector("#recording-list li.empty")
    return dialogs


class BrowserTests(TestCase):
    def assertWithin(self, first: float, second: float, delta: float) -> None:
        """trial's assertAlmostEqual counts places only."""
        self.assertLessEqual(abs(first - second), delta, f"{first} and {second} differ by more")

    skip = SKIP
    timeout = 60

    async def serve(self, **kwargs) -> int:
        self.media = Path(self.mktemp()).absolute()
        self.service, port = await start_server(self, self.media, fps=FPS, **kwargs)
        return port

    def cut(self, finish: bool = False) -> None:
        """Drop the live session's connection from the server's side, as a failing network
        would (the session's owner is the protocol of its connection); with ``finish``, end the
        session too, as its grace period running out would."""
        (session,) = self.service.getServiceNamed("sessions").sessions
        session._owner.transport.abortConnection()
        if finish:
            session.finish(DISCONNECT)

    def check_recording(self, seen: dict, sent: tuple[str, str] = ("h264", "opus")) -> None:
        """The page sent ``sent`` (video and audio codec: Chromium here encodes H.264 and Opus,
        or was told to send JPEG and PCM), says so, and the server agrees; the MP4 holds every
        frame the page sent, and the page sent them at the server's rate; the WAV lasts as long
        as the page streamed."""
        self.assertEqual(seen["errors"], [])
        self.assertEqual(seen["server_errors"], {})
        self.assertEqual((seen["video_codec"], seen["audio_codec"]), sent)
        (session,) = seen["sessions"]
        self.assertEqual((session["video"], session["audio"]), sent)
        described = {"h264": "H.264 (WebCodecs)", "jpeg": "JPEG", "opus": "Opus", "pcm": "PCM"}
        for codec in sent:
            self.assertIn(described[codec], seen["path"])
        # The page's clock (first frame to Stop) against the test's (recording shown to Stop).
        self.assertWithin(seen["seconds"], seen["wall"], delta=1.0)
        video = video_facts(self.media / "video" / seen["video"])
        self.assertEqual((video.codec, video.rate, video.frames), ("h264", FPS, seen["frames"]))
        if sent[0] == "h264":
            # The page's own H.264, stream-copied: constrained baseline as the page asked for,
            # 640x480 (Chromium's fake camera), and (--timing frames) one frame interval each:
            # the MP4 lasts frames/fps, within one frame interval.
            self.assertTrue(session["codec"].startswith("avc1.42"), session["codec"])
            self.assertEqual((video.width, video.height), (640, 480))
            self.assertWithin(video.duration, seen["frames"] / FPS, delta=1 / FPS)
        # Frame n leaves at n/fps after the first: at Stop the count is elapsed * fps, give or
        # take the frame due at that instant and one still being JPEG-encoded when Stop came.
        # Frames skipped because the machine fell over a second behind count as sent, and may
        # be a tenth of them at most.
        self.assertWithin(seen["frames"] + seen["skipped"], seen["seconds"] * FPS, delta=2)
        self.assertLessEqual(seen["skipped"], seen["frames"] // 10)
        audio = wav_facts(self.media / "audio" / seen["audio"])
        self.assertEqual((audio.rate, audio.channels, audio.sample_width), (44100, 1, 2))
        # Audio starts as the first frame is taken and stops at Stop; 23 ms chunks.
        self.assertWithin(audio.samples / 44100, seen["seconds"], delta=0.5)
        loudest = max(abs(int.from_bytes(audio.data[i : i + 2], "little", signed=True))
                      for i in range(0, len(audio.data), 2))  # fmt: skip
        self.assertGreater(loudest, 1000, "the fake microphone's beep is not in the WAV")
        if sent[1] == "opus":
            # Chromium's OpusHead was the one the page built and sent in CONNECT.
            self.assertEqual(seen["opus_head_checked"], "true")
            # Every 20 ms packet once, decoded to 44.1 kHz, less the encoder's 312-sample delay
            # (6.5 ms): within 2 ms.
            expected = seen["audio_chunks"] * 882 - 312 * 44100 / 48000
            self.assertWithin(audio.samples, expected, delta=88)
        else:
            # Every PCM byte the page captured, once.
            self.assertEqual(len(audio.data), seen["audio_bytes"])

    async def test_go_live_from_the_page(self) -> None:
        """Chromium encodes H.264 and Opus here: the page sends them, and the daemon records
        them as they came. Meanwhile the page watches its own session live, through HLS (no
        viewer WebSocket): the picture as the page encoded it, and its Opus."""
        port = await self.serve()
        watched: dict = {}

        def watch_itself(page: Page) -> None:
            live = watched_live(page)
            page.click("#sessions li[data-recording] button.watch")
            page.wait_for_function("Number(document.querySelector('#viewer').dataset.frames) >= 10")
            watched.update(page.evaluate(SHOWN), **live())

        seen = await deferToThread(go_live, f"http://127.0.0.1:{port}/", 4, watch_itself)
        self.check_recording(seen)
        self.assertNotIn("viewer", seen["keyframe_requests"])
        self.assertEqual(watched["sockets"], [])
        self.assertEqual(watched["player"], "mse")
        self.assertTrue(watched["codec"].startswith("avc1.42"), watched)
        self.assertEqual(watched["audio_codec"], "opus")
        self.assertEqual(watched["width"], 640)
        self.assertIn("H.264", watched["status"])
        # The page encodes and sends while it plays: a loaded machine shows it.
        self.assertLessEqual(watched["latency"], 2000)

    async def test_go_live_with_jpeg_when_asked(self) -> None:
        """``?codec=jpeg``: the page sends JPEG frames and PCM, as a browser without WebCodecs
        would, and says why."""
        port = await self.serve()
        seen = await deferToThread(go_live, f"http://127.0.0.1:{port}/?codec=jpeg", 2)
        self.check_recording(seen, ("jpeg", "pcm"))
        self.assertIn("?codec=jpeg", seen["path"])
        self.assertEqual(seen["keyframe_requests"], {})

    async def test_go_live_with_authentication_on(self) -> None:
        port = await self.serve(access=Access(Verifier(SECRET)))
        token = mint(SECRET, ("publish", "read"), 300)
        seen = await deferToThread(go_live, f"http://127.0.0.1:{port}/?token={token}", 2)
        self.check_recording(seen)

        def without_a_token(url: str) -> bool:
            with browser() as page:
                open_page(page, url)
                return page.is_visible("#token-form")

        self.assertTrue(await deferToThread(without_a_token, f"http://127.0.0.1:{port}/"))

    async def through_dropped_connections(self, query: str, cuts: int, seconds: float) -> dict:
        """The server drops the page's connection ``cuts`` times while it is live, the second
        time with the browser offline for over a second: the page says it is reconnecting, keeps
        capturing, resumes, and sends again what the server had not acknowledged. Stop ends ONE
        recording that holds every frame and every audio chunk the page sent, once."""
        port = await self.serve()

        def drops(page: Page) -> None:
            for n in range(1, cuts + 1):
                time.sleep(1.2)
                if n == 2:
                    page.context.set_offline(True)
                blockingCallFromThread(reactor, self.cut)
                page.wait_for_selector("#live-status[data-state=reconnecting]")
                if n == 2:
                    time.sleep(1.5)  # a few attempts fail meanwhile
                    RECONNECTING.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(RECONNECTING))
                    page.context.set_offline(False)
                page.wait_for_function(
                    f"Number(document.querySelector('#live-status').dataset.resumes) === {n}"
                )

        seen = await deferToThread(go_live, f"http://127.0.0.1:{port}/{query}", seconds, drops)
        self.assertEqual(seen["resumes"], cuts)
        self.assertGreater(seen["resent"], 0)  # the cuts lost chunks in flight, sent again
        self.assertEqual((seen["dropped_frames"], seen["dropped_audio_ms"]), (0, 0))
        listing = await get_json(port, "/recordings")
        self.assertEqual(listing, {"video": [seen["video"]], "audio": [seen["audio"]]})
        return seen

    async def test_go_live_with_a_server_that_does_not_take_h264(self) -> None:
        """A server from before the encoded-media extension ignores videoCodec and audioCodec
        in CONNECT and does not echo them: the page sends JPEG and PCM on that connection (its
        CONNECT is relayed to this server with the fields taken out, as such a server would
        read it)."""
        port = await self.serve()
        asked: list[dict] = []

        def as_an_old_server(page: Page) -> None:
            def route(ws) -> None:
                server = ws.connect_to_server()

                def forward(message: str | bytes) -> None:
                    if isinstance(message, str) and '"CONNECT"' in message:
                        hello = json.loads(message)
                        asked.append(dict(hello))
                        for field in ("videoCodec", "audioCodec", "opusHead"):
                            hello.pop(field, None)
                        message = json.dumps(hello)
                    server.send(message)

                ws.on_message(forward)

            page.route_web_socket(f"ws://127.0.0.1:{port}/", route)

        url = f"http://127.0.0.1:{port}/"
        seen = await deferToThread(go_live, url, 2, None, as_an_old_server)
        self.assertEqual((asked[0]["videoCodec"], asked[0]["audioCodec"]), ("h264", "opus"))
        self.check_recording(seen, ("jpeg", "pcm"))
        self.assertIn("the server does not take H.264", seen["path"])

    async def test_go_live_through_dropped_connections(self) -> None:
        """JPEG and PCM: the MP4 has as many frames as the page numbered, the WAV is exactly
        the PCM the page captured (check_recording)."""
        seen = await self.through_dropped_connections("?codec=jpeg", 3, 7)
        self.check_recording(seen, ("jpeg", "pcm"))

    async def test_go_live_with_h264_through_dropped_connections(self) -> None:
        """H.264 and Opus: re-sent frames continue the stream (every frame the page numbered is
        in the MP4, none refused), and after each resume the server asks for a keyframe."""
        seen = await self.through_dropped_connections("", 2, 5)
        self.check_recording(seen)
        self.assertEqual(seen["keyframe_requests"].get("resume"), 2)
        self.assertNotIn("gap", seen["keyframe_requests"])

    async def test_a_recording_that_cannot_be_resumed_ends_with_what_was_saved(self) -> None:
        """The connection drops while the browser is offline, and the session ends meanwhile:
        back online, the page's resume is refused, and it says the recording ended and shows
        the files that were saved."""
        port = await self.serve()

        def lost(url: str) -> dict:
            with browser() as page:
                open_page(page, url)
                page.click("#go")
                page.wait_for_selector("#live-status[data-state=recording]")
                time.sleep(2)
                page.context.set_offline(True)
                blockingCallFromThread(reactor, self.cut, True)
                # Chromium, offline, sometimes tells the page of the reset only once it is back
                # online (seen in 2 of some 20 runs): the page then tries its resume at once.
                # Either way the resume must be refused and the page must say so.
                time.sleep(1.0)
                page.context.set_offline(False)
                page.wait_for_selector("#finished-recording", timeout=60_000)
                page.screenshot(path=str(NOT_RESUMED))
                finished = page.locator("#finished-recording")
                return {
                    "state": page.get_attribute("#live-status", "data-state"),
                    "status": page.text_content("#live-status"),
                    "video": finished.get_attribute("data-video"),
                    "audio": finished.get_attribute("data-audio"),
                    "go": page.is_visible("#go"),
                    "errors": page.errors,
                }

        seen = await deferToThread(lost, f"http://127.0.0.1:{port}/")
        self.assertEqual(seen["errors"], [])
        self.assertEqual(seen["state"], "ended")
        self.assertIn("could not be resumed", seen["status"])
        self.assertIn("saved", seen["status"])
        self.assertTrue(seen["go"])
        listing = await get_json(port, "/recordings")
        self.assertEqual(listing, {"video": [seen["video"]], "audio": [seen["audio"]]})
        self.assertGreater(video_facts(self.media / "video" / seen["video"]).frames, 10)

    async def feed(self, port: int, token: str | None = None) -> str:
        """A session of JPEG frames (a moving test picture) and PCM fed by another client at
        the server's rate, until the test ends; its recording's name."""
        return (await feed_jpeg(self, port, jpeg_frames(FPS), token=token)).name

    def check_watched(self, seen: dict, audio_codec: str = "mp4a.40.2") -> None:
        """The page watched through HLS with its own MSE player, at the live edge: frames
        shown as they come (2 s of them at 15 fps), a latency readout under a second all along,
        the sound rendition decoded; blocking reloads and parts asked for, no viewer WebSocket
        opened."""
        self.assertEqual(seen["errors"], [])
        self.assertIn("live", seen["status"])
        self.assertEqual(seen["player"], "mse")
        self.assertEqual(seen["audio_codec"], audio_codec)
        self.assertEqual(seen["width"], 320)  # the fed frames are shown
        # Two seconds at 15 fps, as they come (not in a burst at the end): allow for a loaded
        # machine, and for catching up (at most 1.25 times as fast), but far from none and far
        # from all at once.
        self.assertGreaterEqual(seen["frames"], 20)
        self.assertLessEqual(seen["frames"], 40)
        # The page's count is the browser's own (which may count one or two that a vsync
        # showed together).
        self.assertWithin(seen["presented"], seen["frames"], delta=4)
        self.assertNotIn(None, seen["latencies"])
        self.assertLessEqual(statistics.median(seen["latencies"]), 1000, seen["latencies"])
        self.assertLessEqual(max(seen["latencies"]), 1500, seen["latencies"])
        self.assertIn("s behind live", seen["readout"])
        self.assertGreater(seen["sound"], 0)
        paths = [urlsplit(url) for url in seen["asked"]]
        self.assertTrue(any(p.path.endswith("/index.m3u8") for p in paths))
        self.assertTrue(any("_HLS_msn" in parse_qs(p.query) and "_HLS_part" in parse_qs(p.query)
                            for p in paths if p.path.endswith("/video.m3u8")), paths)  # fmt: skip
        self.assertTrue(any("/video/p" in p.path for p in paths))
        self.assertTrue(any("/audio/p" in p.path for p in paths))
        self.assertEqual(seen["sockets"], [])

    async def test_watch_a_live_h264_session(self) -> None:
        """A session whose client sends H.264 and Opus is watched as it came: the HLS names
        both (H.264 stream-copied, Opus in its own rendition) and the page plays them."""
        port = await self.serve()
        name = (await feed_h264(self, port, h264_access_units(2 * FPS))).name
        seen = await deferToThread(watch, f"http://127.0.0.1:{port}/#watch={name}", lambda _: None)
        self.check_watched(seen, audio_codec="opus")
        self.assertIn("H.264", seen["status"])
        self.assertTrue(seen["codec"].startswith("avc1.42"), seen["codec"])

    async def test_watch_a_live_session_by_its_link(self) -> None:
        port = await self.serve(mux_audio=True)
        name = await self.feed(port)
        seen = await deferToThread(watch, f"http://127.0.0.1:{port}/#watch={name}", lambda _: None)
        self.check_watched(seen)

    async def test_watch_a_live_session_from_the_list(self) -> None:
        """Needs GET /api/sessions."""
        port = await self.serve(mux_audio=True)
        name = await self.feed(port)

        def click_watch(page: Page) -> None:
            page.click(f"#sessions li[data-recording='{name}'] button.watch")

        seen = await deferToThread(watch, f"http://127.0.0.1:{port}/", click_watch)
        self.check_watched(seen)

    async def test_watch_numbered_frames_to_the_end(self) -> None:
        """A JPEG session fed frames that show their number (bench.numbered), with its sound
        (--mux-audio): the page's Watch shows them in order, under a second after they were
        sent, by the page's own latency readout and by the numbers read off the picture (the
        test knows when it sent each); when the session ends the Watch plays out to its last
        frame, says the session ended, and the page lists the recording. Saves a screenshot
        of the page watching: build/screenshots/watching.png."""
        port = await self.serve(mux_audio=True)
        count = 10 * FPS
        feeder = await feed_jpeg(self, port, numbered.jpeg_frames(ffmpeg_exe(), count), count=count)
        # The session's clock starts when its first frame comes: before the browser starts
        # (which keeps this process busy a while).
        sessions = self.service.getServiceNamed("sessions")
        await until(lambda: sessions.sessions[0].first_chunk_at is not None, 5, "the first frame")
        url = f"http://127.0.0.1:{port}/#watch={feeder.name}"
        seen = await deferToThread(watch_to_the_end, url, feeder.name, count / FPS + 10)
        self.assertEqual(seen["errors"], [])
        numbers = [n for n, _, _, _ in seen["numbers"]]
        self.assertEqual(numbers, sorted(set(numbers)), "not in order, or one shown twice")
        self.assertEqual(numbers[-1], count - 1, "not played to the end")
        # From the first shown on, few skipped (catching up skips some at most); the browser's
        # count, as one read may come for two frames shown together.
        presented = seen["numbers"][-1][3] - seen["numbers"][0][3]
        self.assertGreaterEqual(presented, 0.9 * (numbers[-1] - numbers[0]))
        # Once the first second is played (the start settles at the live edge).
        settled = [row[:3] for row in seen["numbers"] if row[0] >= numbers[0] + FPS]
        glass = [at - feeder.sent_at[n] * 1000 for n, at, _ in settled]
        readouts = [readout for _, _, readout in settled]
        late = statistics.quantiles(glass, n=20)[-1]  # 95th percentile
        self.assertLessEqual(late, 1000, f"frames shown {late:.0f} ms after they were sent")
        self.assertLessEqual(statistics.quantiles(readouts, n=20)[-1], 1000, readouts)
        # The readout tells what the numbers tell (the server's clock starts at the first
        # frame's arrival, a few ms after it was sent).
        self.assertWithin(statistics.median(readouts), statistics.median(glass), delta=150)
        self.assertGreater(seen["sound"], 0)
        self.assertEqual(seen["sockets"], [])

    async def test_the_page_reads_the_playlists_the_daemon_writes(self) -> None:
        """The page's playlist reader (m3u8.js) on the daemon's playlist text: the tracks and
        their MSE types, every part with its URL (the token kept on), whether a picture can start
        there and when it was live, the preload hint, and the part a blocking reload asks for
        next (the next of its segment, or the first of the next once its own is complete)."""
        port = await self.serve()
        segmenter = Segmenter(1000, 0.2, 1, video=True)
        for n, mark in enumerate("KddddKdd"):
            info = FragmentInfo(n * 200, 200, mark == "K", 1, 0, 8)
            segmenter.add(Chunk(0, n * 100, 100, n * 200, 200, mark == "K", 0, info), 0)
        origin = 1_800_000_000.0
        live = playlist.media(segmenter, "video", "?token=a%2Fb", origin)
        segmenter.end()
        ended = playlist.media(segmenter, "video", "?token=a%2Fb", origin, ended=True)
        tracks = playlist.multivariant(
            TrackInfo(90000, "vide", "avc1.42c01e", 320, 240), TrackInfo(48000, "soun", "opus"),
            1000, "?token=a%2Fb",
        )  # fmt: skip

        def read(url: str) -> dict:
            with browser() as page:
                open_page(page, url)
                return page.evaluate(
                    """async ([live, ended, tracks]) => {
                        const m3u8 = await import("/static/m3u8.js");
                        const base = `${location.origin}/live/x/index.m3u8?token=a%2Fb`;
                        const media = new URL("video.m3u8?token=a%2Fb", base).href;
                        const read = (text) => {
                            const p = m3u8.readMedia(text, media);
                            return { parts: p.parts, complete: [...p.complete], hint: p.hint,
                                     ended: p.ended, next: m3u8.nextPart(p, p.parts.at(-1)),
                                     start: m3u8.newestIndependent(p).url };
                        };
                        return { live: read(live), ended: read(ended),
                                 tracks: m3u8.readMultivariant(tracks, base) };
                    }""",
                    [live, ended, tracks],
                )

        seen = await deferToThread(read, f"http://127.0.0.1:{port}/")
        at = f"http://127.0.0.1:{port}/live/x"
        self.assertEqual(
            [(t["kind"], t["url"], t["type"]) for t in seen["tracks"]],
            [("video", f"{at}/video.m3u8?token=a%2Fb", 'video/mp4; codecs="avc1.42c01e"'),
             ("audio", f"{at}/audio.m3u8?token=a%2Fb", 'audio/mp4; codecs="opus"')],
        )  # fmt: skip
        live = seen["live"]
        init = f"{at}/video/init0.mp4?token=a%2Fb"
        self.assertEqual(
            [(p["msn"], p["index"], p["url"], p["map"], p["independent"]) for p in live["parts"]],
            [(n // 5, n % 5, f"{at}/video/p{n}.m4s?token=a%2Fb", init, n in (0, 5))
             for n in range(8)],
        )  # fmt: skip
        self.assertEqual([p["date"] for p in live["parts"]],
                         [origin * 1000 + n * 200 for n in range(8)])  # fmt: skip
        self.assertEqual((live["complete"], live["ended"]), ([0], False))
        self.assertEqual(live["hint"], f"{at}/video/p8.m4s?token=a%2Fb")
        self.assertEqual(live["start"], f"{at}/video/p5.m4s?token=a%2Fb")
        self.assertEqual(live["next"], [1, 3])
        ended = seen["ended"]
        self.assertEqual((ended["complete"], ended["ended"], ended["hint"]), ([0, 1], True, None))
        self.assertEqual(ended["next"], [2, 0])

    async def test_recordings_listed_and_playable(self) -> None:
        """Needs GET /api/recordings and the Range-capable download routes. Saves a screenshot
        of the page for people to look at: build/screenshots/page.png."""
        port = await self.serve()
        audio = [pcm(44100 // FPS, seed=i) for i in range(3 * FPS)]
        _, connected, _ = await record(port, "phone", jpeg_frames(3 * FPS), audio)
        stem = connected["recording"]

        def look(url: str) -> dict:
            with browser() as page:
                open_page(page, url)
                count = play(page, stem)
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(SCREENSHOT), full_page=True)
                return {"players": count,
                        "meta": page.text_content(f"#recording-list li[data-stem='{stem}'] .meta"),
                        "errors": page.errors}  # fmt: skip

        seen = await deferToThread(look, f"http://127.0.0.1:{port}/")
        self.assertEqual(seen["errors"], [])
        self.assertEqual(seen["players"], 2)
        self.assertIn("00:03", seen["meta"])
        self.assertTrue(SCREENSHOT.exists())

    async def test_recordings_paged_and_filtered(self) -> None:
        """The list asks for 50 recordings at a time, newest first, and says how many match:
        Older and Newer turn its pages. The client box (a prefix, asked for once typing stops)
        and the kind narrow it from its first page; what the server refuses is said in the
        list, and the page goes on."""
        port = await self.serve()
        names = []
        for i in range(60):
            client = "tablet" if i % 3 == 0 else "phone"
            _, connected, _ = await record(port, client, audio=[pcm(441, seed=i)])
            names.append(connected["recording"])
        # Newest first: by the epoch-ms of the name, then by file name.
        names.sort(key=lambda name: (int(name.rpartition("_")[2]), f"{name}.wav"), reverse=True)

        def turn(url: str) -> dict:
            with browser() as page:
                asked: list[str] = []
                page.on("request", lambda request: asked.append(request.url))
                open_page(page, url)
                lists(page, 50, 60)
                seen = {
                    "first": listed(page),
                    "total": page.text_content("#recording-total"),
                    "newer": page.is_disabled("#newer"),
                    "older": page.is_disabled("#older"),
                }
                page.click("#older")
                lists(page, 10, 60)
                seen["second"] = listed(page)
                # Older is below the list: the new page is shown from its top.
                seen["top"] = page.evaluate(
                    "document.querySelector('#recordings').getBoundingClientRect().top"
                )
                seen["older_at_end"] = page.is_disabled("#older")
                page.click("#newer")
                lists(page, 50, 60)
                seen["back"] = listed(page)
                # From the second page, typing a client id: its first page.
                page.click("#older")
                lists(page, 10, 60)
                del asked[:]
                page.type("#filter-client", "tab", delay=50)
                lists(page, 20, 20)
                seen["tablet"] = listed(page)
                seen["tablet_total"] = page.text_content("#recording-total")
                seen["typed"] = [
                    parse_qs(urlsplit(url).query)
                    for url in asked
                    if urlsplit(url).path == "/api/recordings"
                ]
                seen["pages_hidden"] = page.is_hidden("#recording-pages")
                page.select_option("#filter-kind", "video")
                lists(page, 0, 0)
                seen["no_video"] = page.text_content("#recording-list")
                page.select_option("#filter-kind", "")
                page.fill("#filter-client", "x" * 257)
                lists(page, 0, None)
                seen["refused"] = page.text_content("#recording-list")
                page.fill("#filter-client", "")
                lists(page, 50, 60)
                seen["again"] = listed(page)
                seen["errors"] = page.errors
                return seen

        seen = await deferToThread(turn, f"http://127.0.0.1:{port}/")
        self.assertEqual(seen["errors"], [])
        self.assertEqual(seen["first"], names[:50])
        self.assertEqual(seen["total"], "60 recordings")
        self.assertEqual((seen["newer"], seen["older"]), (True, False))
        self.assertEqual(seen["second"], names[50:])
        self.assertGreater(seen["top"], -1)  # to a pixel
        self.assertTrue(seen["older_at_end"])
        self.assertEqual(seen["back"], names[:50])
        self.assertEqual(seen["tablet"], [name for name in names if name.startswith("tablet_")])
        self.assertEqual(seen["tablet_total"], "20 recordings")
        # Asked for once typing stopped, from the first page (no cursor).
        self.assertEqual(seen["typed"], [{"client_prefix": ["tab"], "limit": ["50"]}])
        self.assertTrue(seen["pages_hidden"])
        self.assertIn("No recordings match", seen["no_video"])
        self.assertIn("client_prefix must be 1 to 256 characters", seen["refused"])
        self.assertEqual(seen["again"], names[:50])

    async def test_a_session_split_between_pages_is_shown_whole(self) -> None:
        """A session's video and audio are two recordings, side by side in the listing: when a
        page ends between them the session is shown whole there, and deleted whole, and not
        again on the next page. Deleting what a page shows turns back to the page before."""
        port = await self.serve()
        # Sessions that begin in the same millisecond are listed by file name, last first:
        # "aged" before "cam" before "mic" keeps this order whatever the clock does.
        aged = [(await record(port, "aged", audio=[pcm(441, seed=i)]))[1]["recording"]
                for i in range(5)]  # fmt: skip
        _, connected, _ = await record(port, "cam", jpeg_frames(3), [pcm(441)] * 3)
        cam = connected["recording"]
        for i in range(49):
            await record(port, "mic", audio=[pcm(441, seed=i)])
        first = await get_json(port, "/api/recordings?limit=50")
        following = await get_json(port, f"/api/recordings?limit=50&cursor={first['next']}")
        self.assertEqual(first["recordings"][-1]["name"], f"{cam}.wav")
        self.assertEqual(following["recordings"][0]["name"], f"{cam}.mp4")
        item = f"#recording-list li[data-stem='{cam}']"

        def turn(url: str) -> dict:
            with browser() as page:
                dialogs: list[str] = []

                def answer(dialog) -> None:
                    dialogs.append(dialog.message)
                    dialog.accept()

                page.on("dialog", answer)
                open_page(page, url)
                lists(page, 50, 56)
                seen = {"players": page.locator(f"{item} video, {item} audio").count(),
                        "poster": page.get_attribute(f"{item} video", "poster")}  # fmt: skip
                page.click("#older")
                lists(page, 5, 56)
                seen["second"] = listed(page)
                for stem in seen["second"]:
                    page.click(f"#recording-list li[data-stem='{stem}'] button.danger")
                    page.wait_for_selector(
                        f"#recording-list li[data-stem='{stem}']", state="detached"
                    )
                lists(page, 50, 51)
                seen["first_again"] = listed(page)
                seen["pages_hidden"] = page.is_hidden("#recording-pages")
                page.click(f"{item} button.danger")
                lists(page, 49, 49)
                seen["dialogs"] = dialogs
                seen["errors"] = page.errors
                return seen

        seen = await deferToThread(turn, f"http://127.0.0.1:{port}/")
        self.assertEqual(seen["errors"], [])
        self.assertEqual(seen["players"], 2)
        self.assertEqual(seen["poster"], f"/recordings/posters/{cam}.jpg")
        self.assertEqual(seen["second"], aged[::-1])
        self.assertEqual(seen["first_again"][-1], cam)
        # The page after it would hold only the video it showed: there is none.
        self.assertTrue(seen["pages_hidden"])
        self.assertEqual(len(seen["dialogs"]), 6)
        self.assertIn(cam, seen["dialogs"][-1])
        for path in self.files_of(cam):
            self.assertFalse(path.exists(), f"{path} is still there")

    async def recorded(self, port: int, token: str | None = None) -> str:
        """A finished 3 s recording (video, its poster, audio) sent by another client; its stem.
        ``token`` goes in the WebSocket's URL."""
        client = await open_client(port, f"/?token={token}" if token else "/")
        client.send(connect_msg("phone"))
        stem = (await client.event("CONNECTED"))["recording"]
        for i, frame in enumerate(jpeg_frames(3 * FPS)):
            client.send_binary(b"\x01" + frame)
            client.send_binary(b"\x02" + pcm(44100 // FPS, seed=i))
        client.send(CLOSE_MSG)
        await client.event("CLOSED", timeout=60)
        return stem

    def files_of(self, stem: str) -> list[Path]:
        return [self.media / "video" / f"{stem}.mp4", self.media / "audio" / f"{stem}.wav",
                self.media / "posters" / f"{stem}.jpg"]  # fmt: skip

    def check_deleted(self, stem: str, dialogs: list[tuple[str, str]]) -> None:
        """The page asked once, about this recording, and reported no failure."""
        self.assertEqual(len(dialogs), 1, dialogs)
        self.assertEqual(dialogs[0][0], "confirm")
        self.assertIn(stem, dialogs[0][1])
        for path in self.files_of(stem):
            self.assertFalse(path.exists(), f"{path} is still there")

    async def test_delete_a_recording_from_the_page(self) -> None:
        port = await self.serve()
        stem = await self.recorded(port)
        for path in self.files_of(stem):
            self.assertTrue(path.exists(), f"{path} was not made")

        def remove(url: str) -> dict:
            with browser() as page:
                open_page(page, url)
                dialogs = delete(page, stem)
                return {"dialogs": dialogs, "list": page.text_content("#recording-list"),
                        "errors": page.errors}  # fmt: skip

        seen = await deferToThread(remove, f"http://127.0.0.1:{port}/")
        self.assertEqual(seen["errors"], [])
        self.check_deleted(stem, seen["dialogs"])
        self.assertIn("No recordings yet", seen["list"])
        self.assertEqual(await get_json(port, "/recordings"), {"video": [], "audio": []})

    async def test_delete_needs_the_delete_scope(self) -> None:
        """With authentication on, a token that may read but not delete lists the recording
        without a Delete button; one with ``delete`` deletes it."""
        port = await self.serve(access=Access(Verifier(SECRET)))
        stem = await self.recorded(port, mint(SECRET, ("publish",), 300))
        reader = mint(SECRET, ("read",), 300)
        deleter = mint(SECRET, ("read", "delete"), 300)
        item = f"#recording-list li[data-stem='{stem}']"

        def remove(url: str) -> dict:
            with browser() as page:
                open_page(page, f"{url}?token={reader}")
                page.wait_for_selector(item)
                reader_sees = page.is_visible(f"{item} button.danger")
                open_page(page, f"{url}?token={deleter}")
                page.wait_for_selector(item)
                deleter_sees = page.is_visible(f"{item} button.danger")
                dialogs = delete(page, stem)
                return {"reader": reader_sees, "deleter": deleter_sees, "dialogs": dialogs,
                        "errors": page.errors}  # fmt: skip

        seen = await deferToThread(remove, f"http://127.0.0.1:{port}/")
        self.assertEqual(seen["errors"], [])
        self.assertEqual((seen["reader"], seen["deleter"]), (False, True))
        self.check_deleted(stem, seen["dialogs"])
        listing = await get_json(port, f"/recordings?token={reader}")
        self.assertEqual(listing, {"video": [], "audio": []})

    async def test_play_a_recording_with_authentication_on(self) -> None:
        """The token typed into the page's form lets it list recordings and play them: the
        players fetch the files over the Range routes with the token in their URL."""
        port = await self.serve(access=Access(Verifier(SECRET)))
        stem = await self.recorded(port, mint(SECRET, ("publish",), 300))
        token = mint(SECRET, ("read",), 300)

        def look(url: str) -> dict:
            with browser() as page:
                open_page(page, url)
                give_token(page, token)
                count = play(page, stem)
                item = f"#recording-list li[data-stem='{stem}']"
                # Played, not only probed: muted (autoplay rules), until a second has gone by.
                page.eval_on_selector(f"{item} video", "v => { v.muted = true; v.play(); }")
                page.wait_for_function(f'document.querySelector("{item} video").currentTime > 1')
                tokens = "ms => ms.map(m => new URL(m.currentSrc).searchParams.get('token'))"
                return {
                    "players": count,
                    "tokens": page.eval_on_selector_all(f"{item} :is(video, audio)", tokens),
                    "auth": page.is_visible("#auth"),
                    "delete": page.is_visible(f"{item} button.danger"),
                    "errors": page.errors,
                }

        seen = await deferToThread(look, f"http://127.0.0.1:{port}/")
        self.assertEqual(seen["errors"], [])
        self.assertEqual(seen["players"], 2)
        self.assertEqual(seen["tokens"], [token, token])
        self.assertFalse(seen["auth"])
        self.assertFalse(seen["delete"])

    async def test_watch_with_authentication_on(self) -> None:
        """The page opened as /?token=: the token leaves the address bar, and the page watches
        a live session fed by another client, the token in every URL of its HLS."""
        port = await self.serve(access=Access(Verifier(SECRET)), mux_audio=True)
        name = await self.feed(port, mint(SECRET, ("publish",), 300))
        token = mint(SECRET, ("read",), 300)

        def click_watch(page: Page) -> None:
            page.click(f"#sessions li[data-recording='{name}'] button.watch")

        seen = await deferToThread(watch, f"http://127.0.0.1:{port}/?token={token}", click_watch)
        self.check_watched(seen)
        self.check_token(seen, token)
        self.assertNotIn("token", seen["address"])
        self.assertTrue(seen["address"].endswith(f"/#watch={name}"), seen["address"])

    async def test_watch_by_its_link_once_a_token_is_given(self) -> None:
        """A live view's link opened with authentication on and no token yet: the page asks
        for one, and once given, the view plays with it."""
        port = await self.serve(access=Access(Verifier(SECRET)), mux_audio=True)
        name = await self.feed(port, mint(SECRET, ("publish",), 300))
        token = mint(SECRET, ("read",), 300)
        url = f"http://127.0.0.1:{port}/#watch={name}"
        seen = await deferToThread(watch, url, lambda page: give_token(page, token))
        self.check_watched(seen)
        self.check_token(seen, token)

    def check_token(self, seen: dict, token: str) -> None:
        """Every request of the live HLS carried the token in its query."""
        self.assertTrue(seen["asked"])
        for url in seen["asked"]:
            self.assertEqual(parse_qs(urlsplit(url).query).get("token"), [token], url)
