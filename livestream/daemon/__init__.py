"""The daemon as twistd runs it: options checked once, then the service tree.

``options`` is ``twistd livestream``'s Options and the frozen Config; ``service`` builds
``makeService``'s MultiService from a Config (the twistd plugin names it).

May import every package but ``cli``.
"""
