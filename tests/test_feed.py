"""What is owed to an encoder is written as its pipe drains, in order, never all at once."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from livestream.recording.feed import Feed


class Pipe:
    """An encoder's stdin that takes ``room`` writes before it reports itself full."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.written: list[bytes] = []
        self.producer = None

    def registerProducer(self, producer, streaming: bool) -> None:
        self.producer = producer

    def write(self, data: bytes) -> None:
        self.written.append(data)
        self.room -= 1
        if self.room == 0:
            self.producer.pauseProducing()


class Encoder:
    def __init__(self, room: int) -> None:
        self.transport = Pipe(room)
        self.exited = False
        self.ended: Deferred[object] = Deferred()


class Socket:
    def __init__(self) -> None:
        self.paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        raise AssertionError("the feed never drops the client")


class FeedTests(SynchronousTestCase):
    def test_a_long_debt_is_paid_in_batches_as_the_pipe_drains(self) -> None:
        encoder, socket = Encoder(room=2), Socket()
        feed = Feed(encoder, socket, batch=3)
        feed.push(b"a", 7)
        feed.push(b"b")
        self.assertEqual(encoder.transport.written, [b"aaa", b"aaa"])
        self.assertTrue(socket.paused)
        encoder.transport.room = 5
        feed.resumeProducing()
        self.assertEqual(encoder.transport.written, [b"aaa", b"aaa", b"a", b"b"])
        self.assertFalse(socket.paused)

    def test_drained_fires_when_paid_or_when_the_encoder_is_gone(self) -> None:
        encoder, socket = Encoder(room=1), Socket()
        feed = Feed(encoder, socket)
        feed.push(b"x", 3)
        drained = feed.drained()
        self.assertNoResult(drained)
        encoder.transport.room = 1
        feed.resumeProducing()
        self.assertNoResult(drained)
        encoder.exited = True
        encoder.ended.callback(None)
        self.successResultOf(drained)
        self.successResultOf(feed.drained())
        self.assertEqual(encoder.transport.written, [b"x", b"x"])
