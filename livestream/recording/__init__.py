"""Turning a session's chunks into files.

``ffmpeg`` is the child process (found, spawned, fed, its end learned); ``video`` and ``aac``
pipe a session's frames and sound into encoders writing fragmented MP4 in ``temp/``; ``audio``
appends PCM to a WAV; ``feed`` and ``backpressure`` pause the client's socket while a pipe is
full; ``timing`` places chunks on the session's timeline (pure); ``poster`` keeps a frame;
``fragments`` trims a cut-off fragmented MP4 to its last whole fragment.

May import ``library`` and ``wire``; never ``sessions``, ``bucket``, ``web``, ``ops``, ``daemon``.
"""
