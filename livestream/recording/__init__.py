"""Turning a session's chunks into files, and what a killed daemon left back into recordings.

``ffmpeg`` is the child process (found, spawned, fed, its end learned); ``video`` and ``aac``
pipe a session's frames and sound into encoders writing fragmented MP4 in ``temp/``; ``audio``
appends PCM to a WAV; ``feed`` and ``backpressure`` pause the client's socket while a pipe is
full; ``timing`` places chunks on the session's timeline (pure); ``poster`` keeps a frame;
``fragments`` trims a cut-off fragmented MP4 to its last whole fragment; ``recovery`` turns
``temp/`` into listed recordings at start.

May import ``wire``, ``library`` and ``sessions.events``; never ``sessions.session``, ``web``,
``ops``, ``daemon``.
"""
