"""``GET /metrics`` read the way Prometheus reads it, into samples keyed by name and labels."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.support.http import get

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(port: int, headers: dict[str, str] | None = None) -> Samples:
    response = await get(port, "/metrics", headers)
    assert response.code == 200, response.code
    assert response.headers.getRawHeaders("content-type")[0].startswith("text/plain")
    return parse((await response.content()).decode("utf-8"))
