"""The version-free session timing (bess_gateway.endpoint.sessions): pure, time as a parameter, and
the
sample loop over a stand-in station."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from waiting import until

from bess_gateway.domain.settings import Settings
from bess_gateway.endpoint import sessions
from bess_gateway.endpoint.sessions import DueTimes, next_aligned


def test_next_aligned_is_on_the_interval_grid_from_midnight() -> None:
    now = datetime(2026, 11, 24, 10, 7, 31, 500_000, tzinfo=UTC)
    assert next_aligned(now, 900) == datetime(2026, 11, 24, 10, 15, tzinfo=UTC)
    assert next_aligned(now, 1) == datetime(2026, 11, 24, 10, 7, 32, tzinfo=UTC)
    # exactly on the grid: the next instant, not now
    on = datetime(2026, 11, 24, 10, 15, tzinfo=UTC)
    assert next_aligned(on, 900) == on + timedelta(seconds=900)


def test_next_aligned_restarts_at_midnight_when_the_interval_does_not_divide_the_day() -> None:
    late = datetime(2026, 11, 24, 23, 59, 0, tzinfo=UTC)
    # 7 h grid from midnight: 0, 7, 14, 21 h; the next would be 04:00 tomorrow: midnight first
    assert next_aligned(late, 7 * 3600) == datetime(2026, 11, 25, tzinfo=UTC)
    assert next_aligned(datetime(2026, 11, 24, 20, tzinfo=UTC), 7 * 3600) == \
        datetime(2026, 11, 24, 21, tzinfo=UTC)


def test_due_times_per_session() -> None:
    due = DueTimes()
    assert due.due(["a"], 100.0, 10.0) == []  # first sample one interval after the start
    assert due.timeout(100.0) == 10.0
    assert due.due(["a", "b"], 105.0, 10.0) == []
    assert due.due(["a", "b"], 110.0, 10.0) == ["a"]
    assert due.due(["a", "b"], 115.0, 10.0) == ["b"]
    # a stall of several intervals gives one sample, not a burst, and the next one not at once
    assert due.due(["a", "b"], 200.0, 10.0) == ["a", "b"]
    assert due.due(["a", "b"], 201.0, 10.0) == []
    # a session that ended is forgotten
    assert due.due(["b"], 300.0, 10.0) == ["b"]
    assert due.timeout(300.0) == 5.0
    assert due.due([], 301.0, 10.0) == [] and due.timeout(301.0) is None


async def test_sample_interval_0_sends_no_sampled_values_until_an_interval_is_set() -> None:
    """1.6 MeterValueSampleInterval / 2.0.1 TxUpdatedInterval 0 = no sampled data; a later
    non-zero value starts sampling one interval after it is set."""
    settings = Settings({})
    settings.set("meter_sample_interval_s", "0")
    tx = SimpleNamespace(local_id="L1", connector=1)
    station = SimpleNamespace(settings=settings, transactions={1: tx},
                              enforce_energy_limits=lambda: None,
                              energy_limits_pending=lambda: False)
    tx_wake = asyncio.Event()
    # The endpoint's session state hooks a settings change to the sample loop's wake.
    ctx = SimpleNamespace(station=station, tx_wake=tx_wake, endpoint_id="E",
                          services=SimpleNamespace(
                              sessions=sessions.SessionState(settings, tx_wake)))
    turns: list[int] = []  # the interval each loop turn saw
    sent: list[int] = []  # the interval in force at each send

    def interval() -> int:
        turns.append(settings.int("meter_sample_interval_s"))
        return turns[-1]

    async def send(_tx: object) -> None:
        sent.append(settings.int("meter_sample_interval_s"))

    task = asyncio.create_task(sessions.sample_loop(ctx, interval, send))  # type: ignore[arg-type]
    try:
        await until(lambda: turns)
        ctx.tx_wake.set()  # a session event: still nothing to send at 0
        await until(lambda: len(turns) >= 2)
        assert sent == []
        settings.set("meter_sample_interval_s", "1")
        await until(lambda: sent, timeout=5)
        assert sent[0] == 1 and 0 not in sent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
