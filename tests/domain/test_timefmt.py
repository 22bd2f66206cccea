"""CSMS timestamps are UTC whatever the gateway machine's local zone is."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from bess_gateway.domain.timefmt import parse_iso


@pytest.fixture
def local_zone_utc_minus_5(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # A POSIX TZ string needs no tz database: local time is UTC-5 with no DST.
    monkeypatch.setenv("TZ", "XST+05:00")
    time.tzset()
    assert time.timezone == 5 * 3600
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("text", [
    "2026-03-02T12:00:00",  # no zone: what the schema layer lets through, taken as UTC
    "2026-03-02T12:00",
    "2026-03-02T12:00:00.000",
    "2026-03-02T12:00:00Z",
    "2026-03-02T13:00:00+01:00",
])
def test_zoneless_and_zoned_times_are_read_as_utc_in_a_non_utc_process(
        local_zone_utc_minus_5: None, text: str) -> None:
    parsed = parse_iso(text)
    assert parsed == datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    assert parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0
