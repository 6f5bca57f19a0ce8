"""Webhooks: a signed JSON POST to each configured URL when a recording starts, completes, fails
or is recovered.

Every event is written to ``media/webhooks/`` (one JSON file per event and URL, temp + fsync +
rename) before it is sent, and removed once the receiver answers 2xx; anything else is retried
with capped exponential backoff until the event is ``max_age`` old. Files left when the daemon
stops are sent when it starts again, so delivery is at least once: receivers deduplicate by the
event id, the ``webhook-id`` of every attempt. Hashing the recordings and writing the queue
happen in a thread; the reactor only posts.

One job per module: ``settings`` (what the options give), ``payload`` (a session event turned
into the JSON body), ``spool`` (the queue on disk), ``signing`` (the request's headers and
signature), ``delivery`` (one POST, and when to try again), ``service`` (the
:class:`~livestream.ops.webhooks.service.Webhooks` service that ties them together).
"""
