"""A page of ``GET /api/recordings``: its filters and position, read from the query string, and
the one SQL statement that answers it.

Every statement here walks an index in its order and stops after ``limit`` rows, so a page costs
the same at the first recording and the millionth. A client prefix is the one filter no index
orders by date: when it matches few recordings they are sorted, when many the date index is
walked and filtered, whichever reads fewer rows (:func:`page_sql`).

The cursor is the position after the last entry of a page (its ``created`` and file name) and a
digest of the filters it was made under, in URL-safe base64 JSON. It is a position, not a
secret: any cursor that decodes to one is as good as one the daemon made, and one that does not,
or was made under other filters, is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from livestream.library.store import COLUMNS, Row
from livestream.library.tree import safe_stem
from livestream.wire.kinds import AUDIO, VIDEO

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
NEWEST = "newest"
OLDEST = "oldest"
PARAMETERS = ("limit", "cursor", "kind", "client", "client_prefix", "since", "until", "order")
# Not a filter: the token of a client that cannot set headers (livestream.auth.access reads it).
TOKEN = "token"
# Below this many matches a prefix's rows are sorted; above, the date index is filtered.
SORT_AT_MOST = 20000


class BadQuery(ValueError):
    """What the 400 answer says."""


@dataclass(frozen=True)
class Query:
    limit: int = DEFAULT_LIMIT
    kind: str | None = None
    client: str | None = None
    client_prefix: str | None = None
    since: float | None = None
    until: float | None = None
    order: str = NEWEST
    after: tuple[float, str] | None = None

    @property
    def filters(self) -> dict[str, object]:
        return {
            "kind": self.kind, "client": self.client, "prefix": self.client_prefix,
            "since": self.since, "until": self.until, "order": self.order,
        }  # fmt: skip

    def digest(self) -> str:
        text = json.dumps(self.filters, sort_keys=True).encode("utf-8")
        return hashlib.sha256(text).hexdigest()[:16]

    def cursor_after(self, row: Row) -> str:
        document = {"c": row.created, "f": row.filename, "q": self.digest()}
        text = json.dumps(document, separators=(",", ":")).encode("utf-8")
        return base64.urlsafe_b64encode(text).rstrip(b"=").decode("ascii")


def parse(args: Mapping[bytes, list[bytes]]) -> Query:
    """The query of a request's ``args``; BadQuery says what is wrong with it."""
    values: dict[str, str] = {}
    for raw, given in args.items():
        key = raw.decode("utf-8", "replace")
        if key == TOKEN:
            continue
        if key not in PARAMETERS:
            raise BadQuery(f"unknown parameter {key!r}; known: {', '.join(PARAMETERS)}")
        if len(given) != 1:
            raise BadQuery(f"{key} given {len(given)} times")
        try:
            values[key] = given[0].decode("utf-8")
        except UnicodeDecodeError:
            raise BadQuery(f"{key} is not UTF-8") from None
    query = Query(
        limit=_limit(values.get("limit")),
        kind=_kind(values.get("kind")),
        client=_client(values.get("client"), "client"),
        client_prefix=_client(values.get("client_prefix"), "client_prefix"),
        since=_moment(values.get("since"), "since"),
        until=_moment(values.get("until"), "until"),
        order=_order(values.get("order")),
    )
    if "cursor" in values:
        query = replace(query, after=_position(values["cursor"], query))
    return query


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise BadQuery(f"limit must be a whole number from 1 to {MAX_LIMIT}, not {text!r}")
    return int(text)


def _kind(text: str | None) -> str | None:
    if text is not None and text not in (VIDEO, AUDIO):
        raise BadQuery(f"kind must be {VIDEO} or {AUDIO}, not {text!r}")
    return text


def _client(text: str | None, key: str) -> str | None:
    """A client id as a recording's name shows it: the stem the media tree makes of an id (cut
    to its length, other characters than its alphabet as ``_``), so an id finds its recordings
    whatever it holds."""
    if text is None:
        return None
    if not text or len(text) > 256:
        raise BadQuery(f"{key} must be 1 to 256 characters")
    return safe_stem(text)


def _moment(text: str | None, key: str) -> float | None:
    """Seconds since the epoch from ISO 8601 (UTC unless it says otherwise) or epoch-ms."""
    if text is None:
        return None
    if text.isdigit() and len(text) <= 16:
        return int(text) / 1000
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadQuery(f"{key} must be ISO 8601 (2024-11-24T14:53:20Z) or epoch-ms") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _order(text: str | None) -> str:
    if text is None:
        return NEWEST
    if text not in (NEWEST, OLDEST):
        raise BadQuery(f"order must be {NEWEST} or {OLDEST}, not {text!r}")
    return text


def _position(cursor: str, query: Query) -> tuple[float, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        document = json.loads(text)
        created, filename, digest = document["c"], document["f"], document["q"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise BadQuery("cursor is not one this server made") from None
    if (
        not isinstance(created, int | float)
        or isinstance(created, bool)
        or not math.isfinite(created)
        or not isinstance(filename, str)
        or len(filename) > 256
        or not isinstance(digest, str)
    ):
        raise BadQuery("cursor is not one this server made")
    if digest != query.digest():
        raise BadQuery("cursor was made for other filters: repeat the filters it came with")
    return float(created), filename


def _where(query: Query) -> tuple[list[str], list[object]]:
    """The filters (not the position) as SQL conditions and their values."""
    terms: list[str] = []
    values: list[object] = []
    if query.kind is not None:
        terms.append("kind = ?")
        values.append(query.kind)
    if query.client is not None:
        terms.append("stem = ?")
        values.append(query.client)
    if query.client_prefix is not None:
        terms.append("stem >= ? AND stem < ?")
        values += [query.client_prefix, query.client_prefix + "\uffff"]
    if query.since is not None:
        terms.append("created >= ?")
        values.append(query.since)
    if query.until is not None:
        terms.append("created < ?")
        values.append(query.until)
    return terms, values


def count(db: sqlite3.Connection, query: Query) -> int:
    """How many recordings match the filters, on every page."""
    terms, values = _where(query)
    if not terms:
        return db.execute("SELECT coalesce(sum(count), 0) FROM totals").fetchone()[0]
    if terms == ["kind = ?"]:
        found = db.execute("SELECT coalesce(sum(count), 0) FROM totals WHERE kind = ?", values)
        return found.fetchone()[0]
    found = db.execute(f"SELECT count(*) FROM recordings WHERE {' AND '.join(terms)}", values)
    return found.fetchone()[0]


def page(db: sqlite3.Connection, query: Query, total: int) -> list[Row]:
    """Up to ``limit`` rows from the query's position on; one more than asked for tells the
    caller whether there is a next page."""
    sql, values = page_sql(query, total)
    return [Row(*row) for row in db.execute(sql, values)]


def page_sql(query: Query, total: int) -> tuple[str, list[object]]:
    terms, values = _where(query)
    newest = query.order == NEWEST
    if query.after is not None:
        terms.append("(created, filename) < (?, ?)" if newest else "(created, filename) > (?, ?)")
        values += list(query.after)
    direction = "DESC" if newest else "ASC"
    if query.client is not None:
        index = "by_stem"
    elif query.client_prefix is not None:
        index = "by_stem" if total <= SORT_AT_MOST else "by_created"
    elif query.kind is not None:
        index = "by_kind"
    else:
        index = "by_created"
    where = f"WHERE {' AND '.join(terms)}" if terms else ""
    sql = (
        f"SELECT {COLUMNS} FROM recordings INDEXED BY {index} {where} "
        f"ORDER BY created {direction}, filename {direction} LIMIT ?"
    )
    return sql, [*values, query.limit + 1]
