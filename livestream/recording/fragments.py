"""Find where a fragmented MP4 stops being whole, so a cut-off file can still be published.

The encoder's output ends mid-box when the disk fills or the daemon is killed while ffmpeg
writes. Players and stream copies choke on a half-written fragment (a truncated ``mdat`` decodes
as invalid data), so before publishing, the file is cut back to the end of its last complete
fragment. Cutting in place needs no free space, which matters because a full disk is one of the
ways to get here.
"""

from __future__ import annotations

import os
from pathlib import Path

from livestream.library import bmff


def whole_length(path: Path) -> tuple[int, int]:
    """Return ``(length, fragments)``: the bytes up to the end of the last complete fragment.

    A fragment is a ``moof`` followed by its ``mdat``. Complete boxes between or after fragments
    (the ``mfra`` index a finished encoder appends) belong to the whole; a ``moof`` without its
    ``mdat``, or a box cut short, does not.
    """
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return 0, 0
    with f:
        whole = fragments = 0
        in_fragment = False
        for box in bmff.file_boxes(f):
            if box.open_ended:
                break  # size 0, "to the end": a live encoder never writes it, so it is cut short
            if box.type == b"moof":
                in_fragment = True
            elif box.type == b"mdat" and in_fragment:
                in_fragment = False
                fragments += 1
            if not in_fragment:
                whole = box.end
        return whole, fragments


def trim(path: Path) -> tuple[int, int]:
    """Cut ``path`` back to its last complete fragment; return ``(fragments kept, bytes cut)``.

    A file without a complete fragment is left as it is, for the caller to discard.
    """
    length, fragments = whole_length(path)
    if not fragments:
        return 0, 0
    cut = os.path.getsize(path) - length
    if cut:
        os.truncate(path, length)
    return fragments, cut
