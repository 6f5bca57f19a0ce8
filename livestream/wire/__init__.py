"""What crosses the WebSocket, checked before anything acts on it.

``messages`` turns a client's text or binary message into a typed message or a refusal;
``jpeg`` checks that a video chunk is one whole JPEG before it can reach an encoder.

Pure code: no Twisted, no I/O. May import nothing of livestream but ``auth.tokens`` (for the
bound on a token's length).
"""
