"""Benchmarks that print figures: livestream side by side with the old Node.js server.

A package, so that its modules import each other and ``livestream`` without editing
``sys.path``; run each from the checkout with the project's venv as ``python -m bench.<module>``
(bench/README.md says what each figure means):

``run``
    the runner: starts each server fresh per scenario, drives it with ``load``, samples its
    processes from /proc, decodes what it recorded, prints one JSON line per scenario and server.
``load``
    the load generator: real WebSocket clients on 127.0.0.1 with raw sockets, usable as a library
    (``run_clients``) or alone against a running server.
``profile_daemon``
    where the daemon's own CPU goes per frame: a plain pass and one under twistd's cProfile.
``presets``
    x264 presets through the daemon's own encoder arguments: CPU per recorded minute, bitrate,
    SSIM and how many real-time 640x480 streams the cores can encode.
``keyframes``
    the keyframe interval (issue 15): bitrate, encoder CPU and SSIM of GOPs from 0.5 s to
    x264's default through the same encoder arguments, and the keyframes and fragments of the
    encoder's fragmented MP4.
``encoded``
    the encoded media clients of the H.264/Opus extension send: encoded once by the daemon's
    ffmpeg, cut into access units and Opus packets, cached in a temp dir per run.
``capacity``
    real-time capacity of the JPEG path and the passthrough path (H.264 with PCM or Opus), side
    by side, each search going on until a step backs up; reactor stalls from ``/metrics``.
``bandwidth``
    bytes on the wire per recorded minute by path, with the SSIM of each recording.
``ready``
    CLOSE-to-ready of a 4,500-frame recording sent unpaced, JPEG beside H.264.
``library``
    a library of N hard-linked recordings (issue 13): start and index, pages, filters, the full
    listing, and a live session's CLOSE-to-ready beside clients fetching that listing.
``soak``
    the soak (issue 14): clients of every kind for a set time while encoders are killed and
    stopped, the disk filled and the daemon killed; every frame and sample accounted for
    against the bounds of each fault, the daemon's memory watched. ``soakclient`` its clients.
``numbered``
    frames that show their number as bars, read back from ffmpeg's decode or a page's canvas.
``hls``
    live LL-HLS (issue 15): the daemon's cost with 0, 1, 10, 50 players of our own on one
    session, a stalled player, and glass-to-glass latency in Chromium with hls.js (or the page).

Not part of the installed project: bench/ is run from a checkout, never imported by livestream.
"""
