"""Running the daemon: what it tells operators and other systems, and what it cleans up.

``metrics`` (Prometheus), ``health`` (``/healthz``), ``webhooks`` (signed POSTs of recording
events; a package, one module per job), ``notify`` (systemd's sd_notify), ``retention``
(deleting the oldest recordings).

Observes sessions through ``sessions.events``; may import ``wire.kinds``, ``library`` and
``bucket``; never ``web`` or ``daemon``.
"""
