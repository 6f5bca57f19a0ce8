"""What crosses the WebSocket, checked before anything acts on it.

``messages`` turns a client's text or binary message into a typed message or a refusal;
``jpeg`` checks that a video chunk is one whole JPEG before it can reach an encoder; ``kinds``
is the one table of media kinds (directory, suffix, content type, wire name, kind bytes) and of
the PCM format.

Pure code: no Twisted, no I/O, no imports of livestream outside this package: every layer may
import ``kinds``.
"""
