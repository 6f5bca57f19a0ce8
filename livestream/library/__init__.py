"""The finished recordings on this node's disk, and what is known about them.

``tree`` is the media tree (safe names, in-progress files in ``temp/``, one rename into
place); ``catalog`` the details of every finished recording; ``mediainfo`` reads duration and
counts from a file's headers; ``local`` is the :class:`~livestream.library.local.Library`
interface the routes and retention act on, and its local form.

The bottom of the stack: imports nothing of livestream outside this package but ``wire.kinds``.
"""
