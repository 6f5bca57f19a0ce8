"""``livestream-token``: mint an access token for a daemon started with ``--auth-secret-file``.

Reads the same secret file as the daemon and prints one HS256 JWT on stdout, so it can go
straight into a client's configuration:
``livestream-token --secret-file secret --scope publish --id 'cam-*' --ttl 1h``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from typing import TypeVar

from livestream.auth.tokens import SCOPES, KeyFileError, mint, read_secret

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
# --max-bytes parses to an int, --max-seconds to a float: the parser gives what it was made for.
_Number = TypeVar("_Number", int, float)


def duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``1h`` or ``7d``, in seconds."""
    match = _DURATION.match(text.strip())
    if match is None or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 15m, 1h or 7d")
    return float(match[1]) * _UNITS[match[2]]


def _positive(kind: type[_Number]) -> Callable[[str], _Number]:
    def parse(text: str) -> _Number:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not a positive {kind.__name__}")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="livestream-token",
        description="Mint an access token (HS256 JWT) for a livestream daemon started with "
        "--auth-secret-file; it is printed on stdout.",
    )
    parser.add_argument("--secret-file", required=True, metavar="FILE",
                        help="the daemon's --auth-secret-file")  # fmt: skip
    parser.add_argument("--scope", action="append", required=True,
                        help="what the token allows: " + ", ".join(SCOPES)
                        + "; repeatable, or several separated by spaces")  # fmt: skip
    parser.add_argument("--id", action="append", dest="ids", metavar="PATTERN",
                        help="client id it may publish as, or an fnmatch pattern (cam-*); "
                        "repeatable; without it, any id")  # fmt: skip
    parser.add_argument("--ttl", type=duration, default=3600.0, metavar="DURATION",
                        help="how long it is valid: 90s, 15m, 1h, 7d (default 1h)")  # fmt: skip
    parser.add_argument("--subject", metavar="NAME",
                        help="who it is for (the sub claim; the daemon logs it)")  # fmt: skip
    parser.add_argument("--max-seconds", type=_positive(float), metavar="N",
                        help="longest session it may record")  # fmt: skip
    parser.add_argument("--max-bytes", type=_positive(int), metavar="N",
                        help="most media bytes one session may send")  # fmt: skip
    args = parser.parse_args(argv)

    scopes = [scope for arg in args.scope for scope in arg.split()]
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        parser.error(f"unknown scope {' '.join(unknown)!r}; one of: {', '.join(SCOPES)}")
    try:
        secret = read_secret(args.secret_file)
    except KeyFileError as e:
        parser.error(str(e))
    print(
        mint(
            secret, list(dict.fromkeys(scopes)), args.ttl, ids=args.ids, subject=args.subject,
            max_seconds=args.max_seconds, max_bytes=args.max_bytes,
        )
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
