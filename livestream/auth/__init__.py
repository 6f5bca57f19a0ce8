"""Who may do what: signed access tokens, and the access checks built on them.

``tokens`` verifies and mints JWTs and says what a token grants; ``access`` applies them (and
the allowed browser origins) to WebSocket handshakes, ``CONNECT`` and HTTP requests.

May import ``wire`` only.
"""
