"""``twistd livestream`` options parsed as twistd parses them, for tests of what they accept."""

from __future__ import annotations

from livestream.daemon.options import Options


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options
