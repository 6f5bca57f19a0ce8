"""``livestream-send``: a client of the protocol that streams a file or a test pattern.

``main`` (the command line) drives ``source`` (one ffmpeg decoding into JPEG frames and PCM,
cut by ``split``), ``outbox`` (what may leave, and what is kept until acknowledged), ``link``
(the session across dropped connections), ``client`` (the WebSocket) and ``progress`` (the
line on stderr).
"""
