"""A bucket of S3-compatible object storage shared by several daemons.

``objectstore`` talks to the store (boto3 in a thread pool); ``uploader`` moves every finished
recording there and off the disk; ``library`` serves the bucket merged with this node's files;
``watch`` keeps what health and metrics say about the store.

May import ``wire.kinds``, ``library`` and ``sessions.events``; never ``web``, ``ops``, ``daemon``.
"""
