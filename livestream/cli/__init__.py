"""The commands installed beside the daemon: ``livestream-token`` (``token``) and
``livestream-send`` (the ``send`` package).

Clients of the daemon: they import ``wire`` and ``recording.ffmpeg``, never the daemon's
sessions, web or services.
"""
