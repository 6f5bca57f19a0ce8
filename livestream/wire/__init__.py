"""What crosses the WebSocket, checked before anything acts on it.

``messages`` turns a client's text or binary message into a typed message or a refusal;
``jpeg`` checks that a video chunk is one whole JPEG before it can reach an encoder.

Pure code: no Twisted, no I/O, and no import of the rest of livestream: every layer may use it.
"""
