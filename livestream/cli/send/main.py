"""``livestream-send``: stream a file, or a test pattern and tone, to a livestream server.

A client of the seed protocol for trying a server, loading it, and recording from the command
line: ``livestream-send ws://localhost:8080/ talk.mp4`` or
``livestream-send ws://localhost:8080/ --test-pattern --duration 10``. The names of the
recordings are printed on stdout as one JSON object, exactly as ``CLOSED`` gave them. A server
that offers resume gets a session that survives dropped connections
(:mod:`livestream.cli.send.link`). ``--codec h264`` and ``--audio-codec opus`` send what ffmpeg
encoded, as a browser's WebCodecs encoder would, over the encoded-media extension.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import TextIO

from twisted.internet import task
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.error import ConnectError, DNSLookupError, ProcessExitedAlready
from twisted.web.error import SchemeNotSupported

from livestream.cli.send import source as media
from livestream.cli.send.client import ServerGone, Target, reason, target
from livestream.cli.send.link import Link
from livestream.cli.send.outbox import Outbox
from livestream.cli.send.progress import Progress
from livestream.cli.token import duration
from livestream.recording import ffmpeg
from livestream.recording.ffmpeg import FFmpegResult, FFmpegUnusable
from livestream.wire.kinds import AUDIO, BYTES_PER_SECOND, VIDEO, Codec

# An audio chunk is a tenth of a second: as often as a browser's recorder sends one, and small
# enough that real-time pacing stays smooth.
AUDIO_CHUNK = BYTES_PER_SECOND // 10
CONNECT_TIMEOUT = 30.0
_SIZE = re.compile(r"^(\d+)x(\d+)$")


class Failed(Exception):
    """Ends the run with exit status 1 and this one-line message on stderr."""


def _size(text: str) -> tuple[int, int]:
    match = _SIZE.match(text.strip())
    if match is None or not all(0 < int(n) <= 8192 and int(n) % 2 == 0 for n in match.groups()):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size like 640x480 (even numbers up to 8192)"
        )
    return int(match[1]), int(match[2])


def _fps(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 120:
        raise argparse.ArgumentTypeError(f"{text!r} is not a frame rate from 1 to 120")
    return int(text)


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, Target]:
    parser = argparse.ArgumentParser(
        prog="livestream-send",
        description="Stream a video/audio file, or a test pattern and tone, to a livestream "
        "server; print the names of the recordings (JSON) on stdout when it has finished them.",
    )
    parser.add_argument("url", help="the server: ws://host:8080/ or wss://host:8443/")
    parser.add_argument("file", nargs="?",
                        help="a video or audio file ffmpeg can read")  # fmt: skip
    parser.add_argument("--test-pattern", action="store_true",
                        help="send ffmpeg's testsrc2 pattern and a 440 Hz tone instead of a "
                        "file")  # fmt: skip
    parser.add_argument("--duration", type=duration, metavar="SECONDS",
                        help="stop after this long (10, 90s, 5m); default: the whole file, "
                        "or until Ctrl-C for the test pattern")  # fmt: skip
    parser.add_argument(
        "--fps",
        type=_fps,
        default=15,
        help="frames per second sent (default 15; match the server's --fps)",
    )
    parser.add_argument(
        "--size",
        type=_size,
        metavar="WxH",
        help="frame size (default: the file's, 640x480 for the test pattern)",
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help="send as fast as the server takes it instead of in real time",
    )
    parser.add_argument(
        "--codec",
        choices=[Codec.JPEG.value, Codec.H264.value],
        default=Codec.JPEG.value,
        help="video as JPEG frames (default), or H.264 encoded here (libx264, a keyframe "
        "every second) and recorded by the server as sent",
    )
    parser.add_argument(
        "--audio-codec",
        choices=[Codec.PCM.value, Codec.OPUS.value],
        default=Codec.PCM.value,
        help="audio as PCM (default), or Opus encoded here (48 kHz mono, 20 ms, 32 kbit/s)",
    )
    parser.add_argument(
        "--binary",
        action="store_true",
        help="send media as binary messages (the fast path) instead of JSON",
    )
    parser.add_argument(
        "--id",
        default="livestream-send",
        help="the client id sent in CONNECT (default livestream-send)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("LIVESTREAM_TOKEN"),
        help="access token sent in CONNECT (default: $LIVESTREAM_TOKEN)",
    )
    parser.add_argument(
        "--cafile",
        metavar="PEM",
        help="for wss://, trust this CA certificate instead of the system's",
    )
    parser.add_argument(
        "--ffmpeg",
        metavar="PATH",
        help="the ffmpeg to decode with (default: as the daemon finds it)",
    )
    args = parser.parse_args(argv)
    args.codec, args.audio_codec = Codec(args.codec), Codec(args.audio_codec)
    if (args.file is None) == (not args.test_pattern):
        parser.error("give a file to send, or --test-pattern (not both)")
    try:
        where = target(args.url)
    except ValueError as e:
        parser.error(str(e))
    if args.cafile is not None and not os.path.isfile(args.cafile):
        parser.error(f"--cafile {args.cafile}: no such file")
    return args, where


async def run(reactor, args: argparse.Namespace, where: Target, stdout: TextIO,
              stderr: TextIO) -> None:  # fmt: skip
    """Probe, connect, stream, close; raise :class:`Failed` for anything that went wrong."""
    try:
        executable = ffmpeg.find(args.ffmpeg)
    except FFmpegUnusable as e:
        raise Failed(str(e)) from None
    video = audio = True
    if args.file is not None:
        try:
            video, audio = await media.probe(reactor, executable, args.file)
        except media.SourceError as e:
            raise Failed(str(e)) from None
    source = media.Source(args.file, args.fps, args.size, args.duration, video, audio,
                          args.codec, args.audio_codec)  # fmt: skip
    opus = audio and args.audio_codec == Codec.OPUS
    # What CONNECT announces: the codecs of the kinds this source sends.
    codecs = {VIDEO: args.codec} if video else {}
    if audio:
        codecs[AUDIO] = args.audio_codec

    errors: list[dict] = []
    link = Link(reactor, where, args.cafile, args.id, args.token, args.binary, errors.append,
                codecs)  # fmt: skip
    # The source starts first: with Opus, CONNECT carries the OpusHead ffmpeg writes first.
    # Until CONNECTED the outbox holds what comes (pausing ffmpeg as ever when it is a lot).
    outbox = Outbox(reactor, link.send_media, args.fps, realtime=not args.fast, held=True)
    reader = media.start(reactor, executable, source, outbox.frame, outbox.audio, AUDIO_CHUNK)
    outbox.attach(ffmpeg.pipes(reader))

    def stop_source(_: object = None) -> None:
        try:
            ffmpeg.pipes(reader).signalProcess("TERM")
        except ProcessExitedAlready:
            pass

    async def give_up(message: str) -> Failed:
        stop_source()
        outbox.discard()
        await reader.ended
        return Failed(message)

    opus_head = None
    if opus:
        try:
            opus_head = await reader.opus_head.addTimeout(CONNECT_TIMEOUT, reactor)
        except media.SourceError as e:
            raise await give_up(f"reading the source failed; {e}") from None
        except TimeoutError:
            raise await give_up(
                f"ffmpeg wrote no Opus header within {CONNECT_TIMEOUT:g} s"
            ) from None
    try:
        await link.open(CONNECT_TIMEOUT, opus_head)
    except (ConnectError, DNSLookupError, SchemeNotSupported) as e:
        raise await give_up(f"cannot connect to {where.url}: {reason(e)}") from None
    except TimeoutError:
        raise await give_up(
            f"cannot connect to {where.url}: no CONNECTED within {CONNECT_TIMEOUT:g} s"
        ) from None
    except ServerGone as e:
        raise await give_up(str(e)) from None

    link.carry(outbox)
    outbox.begin(keep=link.resumable)

    def note() -> str:
        requests = link.keyframe_requests
        asked = f"{requests} keyframe request{'s' if requests > 1 else ''}" if requests else ""
        return ", ".join(part for part in (link.status(), asked) if part)

    progress = Progress(
        reactor, stderr, lambda: (outbox.frames, float(outbox.audio_seconds), link.bytes_out),
        note,
    )  # fmt: skip
    link.on_change = progress.show
    progress.start()
    interrupted: list[bool] = []

    def source_ended(result: FFmpegResult) -> FFmpegResult:
        outbox.source_done()
        return result

    def on_interrupt() -> Deferred[None]:
        """Ctrl-C: end the source, and let what was read be sent and the recording finished."""
        interrupted.append(True)
        stop_source()
        outbox.hurry()
        return finished

    finished: Deferred[None] = Deferred()
    link.lost.addCallback(stop_source)
    reader.ended.addCallback(source_ended)
    trigger = reactor.addSystemEventTrigger("before", "shutdown", on_interrupt)
    closed: dict | None = None
    gone: ServerGone | None = None
    try:
        result = await reader.ended
        closed = await link.close()
    except ServerGone as e:
        # The server may have finished the recording before it went (a limit, its shutdown).
        closed, gone = link.closed_reply, e
    finally:
        progress.stop()
        reactor.removeSystemEventTrigger(trigger)
        reactor.callLater(0, finished.callback, None)
    if closed is not None:
        stdout.write(json.dumps(closed["recordings"]) + "\n")
        stdout.flush()
    if gone is not None:
        raise Failed(str(gone))
    if reader.broken:
        raise Failed(reader.broken)
    if not result.ok and not interrupted:
        raise Failed(f"reading the source failed; {result.describe()}")
    if errors:
        last = errors[-1]
        raise Failed(
            f"the server refused {len(errors)} message(s); last: {last.get('code')}: "
            f"{last.get('message')}"
        )


def main(argv: list[str] | None = None) -> int:
    args, where = parse(argv)

    async def go(reactor) -> None:
        try:
            await run(reactor, args, where, sys.stdout, sys.stderr)
        except Failed as e:
            sys.stderr.write(f"livestream-send: {e}\n")
            raise SystemExit(1) from None

    task.react(go)
    return 0


if __name__ == "__main__":
    sys.exit(main())
