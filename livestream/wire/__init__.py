"""What crosses the WebSocket, checked before anything acts on it.

``messages`` turns a client's text or binary message into a typed message or a refusal;
``jpeg`` checks that a video chunk is one whole JPEG before it can reach an encoder; ``kinds``
is the one table of media kinds (directory, suffix, content type, wire name, kind bytes) and of
the PCM format; ``codes`` is what a refusal is (a code and a message) and the one table of the
RFC 6455 close codes that follow some of them.

Pure code: no Twisted, no I/O, no imports of livestream outside this package. The bottom of
every layer: any package may import ``kinds`` and ``codes`` (and define its refusals on
``codes.Refusal``); only ``web.protocol`` turns refusals into replies and close codes.
"""
