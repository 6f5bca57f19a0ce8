"""What the test modules share, one module per job; a helper only one test module uses stays in it.

- ``websocket``: the seed-like WebSocket client, its messages, whole sessions
- ``http``: requests to a daemon through treq
- ``media``: real frames and samples to send; decoded checks of the recordings
- ``daemon``: a real ``twistd -n livestream`` in a child process, started and signalled
- ``server``: the daemon's service tree in the test's own process
- ``s3``: a real S3-protocol server (moto's)
- ``ports``, ``waiting``: free loopback ports; waiting on the reactor
- ``sandbox``: ``python -m tests.support.sandbox``, the unit's seccomp rules without systemd
"""
