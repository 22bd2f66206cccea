"""Cost of one pure control step (`_core.Controller.step`) as Python sees it, result dict included.

Run: .venv/bin/pytest benches --benchmark-only
"""

from __future__ import annotations

import itertools

import pytest

from bess_gateway._core import Controller

START_S = 1_750_000_000.0


def block(energy_wh: int) -> list[int]:
    r = [0] * 28
    r[0] = 2
    r[3], r[4], r[5] = 4000, 5000, 7000
    r[7], r[8], r[9], r[10] = 500, 1000, 250, 200
    r[13], r[14] = divmod(500_000, 0x10000)
    r[15], r[16] = divmod(500_000, 0x10000)
    for i in range(4):
        r[19 + i] = (energy_wh >> (16 * (3 - i))) & 0xFFFF
        r[23 + i] = (energy_wh >> (16 * (3 - i))) & 0xFFFF
    return r


def loaded(sessions: int) -> Controller:
    """Half discharging, half charging, with schedules, demand well above the site limits."""
    c = Controller({"site_max_discharge_kw": 600, "site_max_charge_kw": 600})
    for meter in range(sessions):
        c.start_session(meter, 1 if meter % 2 == 0 else -1, 150_000.0)
        c.set_session_schedule(meter, [(START_S, 120_000.0), (START_S + 3600, 80_000.0)])
    return c


@pytest.mark.parametrize("sessions", [2, 200])
def test_step(benchmark, sessions: int) -> None:
    c = loaded(sessions)
    counter = itertools.count()
    blocks = [block(1_000_000 + i) for i in range(64)]

    def one_step() -> dict:
        i = next(counter)
        return c.step(START_S + 0.1 * i, blocks[i % 64])

    out = benchmark(one_step)
    assert len(out["allocations"]) == sessions
