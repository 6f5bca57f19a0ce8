"""What one client may take from the daemon: every field is a ``twistd livestream`` option."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """What one client may take from the daemon; every field is an option."""

    max_message_size: int = 16 * MiB
    max_sessions: int = 64
    max_session_seconds: float = 4 * 3600.0
    max_session_bytes: int = 8 << 30
    idle_timeout: float = 30.0
    handshake_timeout: float = 10.0
    ping_interval: float = 20.0
    ping_timeout: float = 60.0
    min_free_bytes: int = 512 * MiB


_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kib": 1 << 10, "kb": 10**3,
    "m": 1 << 20, "mib": 1 << 20, "mb": 10**6,
    "g": 1 << 30, "gib": 1 << 30, "gb": 10**9,
    "t": 1 << 40, "tib": 1 << 40, "tb": 10**12,
}  # fmt: skip


def parse_size(text: str) -> int:
    """Bytes from ``50GiB``, ``500MB``, ``1.5T`` or ``1024``: KiB/MiB/GiB/TiB and bare K/M/G/T are
    powers of 1024, kB/MB/GB/TB powers of 1000 (as disks are sold)."""
    stripped = text.strip()
    number = stripped.rstrip("bBiIkKmMgGtT ")
    unit = stripped[len(number) :].strip().lower()
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"{text!r} is not a size (e.g. 50GiB, 500MB, 1024)") from None
    if unit not in _UNITS or value < 0 or value != value or value == float("inf"):
        raise ValueError(f"{text!r} is not a size (e.g. 50GiB, 500MB, 1024)")
    return int(value * _UNITS[unit])
