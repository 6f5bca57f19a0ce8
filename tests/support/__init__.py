"""What the test modules share, one module per job; a helper only one test module uses stays in it.

- ``fakes``: stand-ins for what the code under test talks to (a reactor that records spawned
  processes, an ffmpeg wrapper that is slow or dies)
- ``websocket``: the seed-like WebSocket client, its messages, whole sessions
- ``http``: requests to a daemon, through treq and byte for byte
- ``metrics``: ``GET /metrics`` read into samples
- ``logs``: the log lines a test's in-process daemon writes
- ``media``: real frames and samples to send; decoded checks of the recordings
- ``feeders``: live sessions fed at the server's rate by another client, each frame's send time
  kept
- ``chromium``: Debian's Chromium driven by Playwright, or why the tests that need it skip
- ``daemon``: a real ``twistd -n livestream`` in a child process, started, stopped and killed;
  ``DaemonCase``, a test with daemons of its own
- ``processes``: the daemon's encoders, found, killed and waited for through /proc
- ``server``: the daemon's service tree in the test's own process
- ``s3``: a real S3-protocol server (moto's)
- ``tls``: a test certificate authority and the server's key and certificate
- ``options``: ``twistd livestream`` options parsed as twistd parses them
- ``ports``: free loopback ports, and whether anything listens on one
- ``waiting``: waiting on the reactor, for a time or for a condition
- ``sandbox``: ``python -m tests.support.sandbox``, the unit's seccomp rules without systemd
"""
