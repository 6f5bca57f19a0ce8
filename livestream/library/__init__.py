"""The finished recordings on this node's disk, and what is known about them.

``tree`` is the media tree (safe names, in-progress files in ``temp/``, one rename into
place, the one scan of the finished files); ``catalog`` the details of every finished
recording; ``mediainfo`` reads duration and counts from a file's headers, through ``bmff``,
the one walker of MP4 boxes; ``local`` is the :class:`~livestream.library.local.Library`
interface the routes and retention act on, and its local form. ``durable`` (a write that is
whole or absent after a crash) and ``digest`` (a file's SHA-256) serve the uploader and the
webhooks.

The bottom of the stack: imports nothing of livestream outside this package but ``wire.kinds``.
"""
