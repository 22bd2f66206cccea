"""Composite schedule evaluation (domain/smart_charging.py), as GetCompositeSchedule and the
15-minute schedule refresh run it for one connector.

Run: .venv/bin/pytest benches/bench_smart_charging.py
The stack is a busy but legal one: a daily-recurring ChargePointMaxProfile with 24 hourly periods,
an absolute TxDefaultProfile with 48 half-hour periods on two stack levels, and a relative
TxProfile, evaluated over 24 hours.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bess_gateway.domain import smart_charging as sc

NOW = datetime(2025, 6, 1, 12, 7, 30, tzinfo=UTC)
DAY = timedelta(hours=24)


def _profile(pid: int, connector: int, level: int, purpose: sc.Purpose, kind: sc.Kind,
             periods: list[tuple[int, float]], *, start: datetime | None = None,
             recurrency: sc.Recurrency | None = None, unit: sc.RateUnit = sc.RateUnit.W,
             duration_s: int | None = None) -> sc.ChargingProfile:
    return sc.ChargingProfile(
        profile_id=pid, connector=connector, stack_level=level, purpose=purpose, kind=kind,
        recurrency=recurrency,
        schedule=sc.Schedule(unit=unit, start=start, duration_s=duration_s,
                             periods=tuple(sc.Period(s, lim) for s, lim in periods)))


def stack() -> tuple[sc.StationProfiles, datetime]:
    midnight = NOW.replace(hour=0, minute=0, second=0)
    tx_start = NOW - timedelta(minutes=20)
    profiles = (
        _profile(1, 0, 0, sc.Purpose.CHARGE_POINT_MAX, sc.Kind.RECURRING,
                 [(h * 3600, 150_000.0 - 2000 * h) for h in range(24)], start=midnight,
                 recurrency=sc.Recurrency.DAILY, duration_s=86_400),
        _profile(2, 1, 0, sc.Purpose.TX_DEFAULT, sc.Kind.ABSOLUTE,
                 [(i * 1800, 100.0 + i) for i in range(48)], start=midnight,
                 unit=sc.RateUnit.A),
        _profile(3, 0, 1, sc.Purpose.TX_DEFAULT, sc.Kind.ABSOLUTE,
                 [(i * 1800, 90_000.0 + 500 * (i % 7)) for i in range(48)], start=midnight,
                 duration_s=43_200),
        _profile(4, 1, 2, sc.Purpose.TX, sc.Kind.RELATIVE,
                 [(0, 120_000.0), (600, 80_000.0), (3600, 60_000.0)], duration_s=7200),
    )
    installed = {p.profile_id: midnight for p in profiles}
    return sc.StationProfiles(profiles, installed), tx_start


@pytest.mark.parametrize("connector", [0, 1])
def test_composite_schedule_24h(benchmark, connector: int) -> None:
    sp, tx_start = stack()
    electrical = sc.Electrical()

    def evaluate() -> list[sc.Segment]:
        return sc.composite(sp, connector, NOW, DAY, electrical, tx_start=tx_start,
                            physical_w=200_000.0)

    segs = benchmark(evaluate)
    assert segs[0].start == NOW
    assert all(s.limit_w is not None and 0 < s.limit_w <= 200_000.0 for s in segs)
    if connector == 1:
        # the relative TxProfile leads for its 2 hours; 20 minutes in, its 80 kW period runs
        assert segs[0].limit_w == 80_000.0
