"""Hub load profiles (pure): the EV hub day, its compression in time, steps and CSV files."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from bess_gateway.sim.hub_load import (
    DAY_S,
    ConstantLoad,
    DayProfile,
    StepLoad,
    parse_hub_load,
)


def test_day_is_deterministic_for_a_seed_and_differs_between_seeds() -> None:
    times = [i * 97.0 for i in range(800)]
    a, b, c = DayProfile(seed=7), DayProfile(seed=7), DayProfile(seed=8)
    assert [a.load_w(t) for t in times] == [b.load_w(t) for t in times]
    assert [a.load_w(t) for t in times] != [c.load_w(t) for t in times]


@pytest.mark.parametrize("seed", range(1, 11))
def test_day_looks_like_a_fast_charging_hub(seed: int) -> None:
    day = DayProfile(seed=seed)
    assert 4 <= len(day.charger_kw) <= 8
    assert all(150 <= kw <= 350 for kw in day.charger_kw)
    for s in day.sessions:
        length_min = (s.end_s - s.start_s) / 60
        assert 10 <= length_min <= 40 or s.end_s == DAY_S  # a session cut at midnight
        assert 0 < s.plateau_w <= day.charger_kw[s.charger] * 1000
    # One car at a time per charger.
    for c in range(len(day.charger_kw)):
        mine = [s for s in day.sessions if s.charger == c]
        assert all(x.end_s <= y.start_s for x, y in itertools.pairwise(mine))
    # Nothing above the base load plus every charger at its rating; never below the base.
    top = day.base_kw * 1000 * 4 / 3 + sum(day.charger_kw) * 1000
    loads = [day.load_at_day_time(t) for t in range(0, int(DAY_S), 60)]
    assert all(day.base_kw * 1000 <= w <= top for w in loads)


def test_peaks_are_busier_than_the_night() -> None:
    """Over many seeds: more energy drawn in 07-09 and 17-19 than in 01-05."""

    def energy(day: DayProfile, h0: int, h1: int) -> float:
        return sum(day.load_at_day_time(t) - day.base_w(t) for t in range(h0 * 3600, h1 * 3600, 60))

    days = [DayProfile(seed=s) for s in range(20)]
    night = sum(energy(d, 1, 5) for d in days) / 4  # per hour
    morning = sum(energy(d, 7, 9) for d in days) / 2
    evening = sum(energy(d, 17, 19) for d in days) / 2
    assert morning > 4 * night and evening > 4 * night


def test_a_session_ramps_up_holds_and_tapers() -> None:
    day = DayProfile(seed=3)
    s = max(day.sessions, key=lambda s: s.end_s - s.start_s)
    length = s.end_s - s.start_s
    assert s.power_w(s.start_s) == 0
    assert s.power_w(s.start_s + 0.5 * length) == pytest.approx(s.plateau_w)
    assert s.power_w(s.start_s + 0.95 * length) < 0.6 * s.plateau_w
    assert s.power_w(s.end_s) == 0


def test_compression_runs_the_same_day_faster() -> None:
    real, fast = DayProfile(seed=5), DayProfile(seed=5, day_s=600.0)
    for t in (0.0, 12.5, 100.0, 333.0, 599.0):
        assert fast.load_w(t) == real.load_w(t * DAY_S / 600.0)
    # The day repeats, and start_hour shifts it.
    assert fast.load_w(610.0) == fast.load_w(10.0)
    assert DayProfile(seed=5, start_hour=17.5).load_w(0.0) == real.load_w(17.5 * 3600)


def test_steps_and_constant() -> None:
    steps = StepLoad(((0.0, 1.0), (5.0, 2.0)))
    assert [steps.load_w(t) for t in (-1, 0, 4.9, 5, 99)] == [1.0, 1.0, 1.0, 2.0, 2.0]
    assert ConstantLoad(3.0).load_w(1e9) == 3.0
    with pytest.raises(ValueError):
        StepLoad(((5.0, 1.0), (1.0, 2.0)))


def test_parse_specs(tmp_path: Path) -> None:
    assert parse_hub_load("constant:250").load_w(0) == 250_000
    assert parse_hub_load("steps:0=100,30=900").load_w(31) == 900_000
    csv = tmp_path / "hub.csv"
    csv.write_text("seconds,kW\n0,50\n60,400.5\n")
    assert parse_hub_load(f"file:{csv}").load_w(61) == 400_500
    day = parse_hub_load("day", seed=4, chargers=6, day_minutes=10, start_hour=8)
    assert isinstance(day, DayProfile) and len(day.charger_kw) == 6 and day.day_s == 600
    for bad in ("nope", "constant:", "constant:x", "steps:5", f"file:{tmp_path}/none.csv",
                "constant:inf"):
        with pytest.raises(ValueError):
            parse_hub_load(bad)
