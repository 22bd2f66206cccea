"""The allocator with 200 sessions in 20 groups, through the pure `_core.Controller`.

Run: .venv/bin/pytest benches/bench_allocator.py
bench_core.py times one step with per-session schedules only; here every session also belongs to
a group (an endpoint's ChargePointMaxProfile) whose cap binds, and the site limit binds on top,
so the allocation has three levels to satisfy, as at a busy hub.
"""

from __future__ import annotations

import itertools

from bench_core import START_S, block

from bess_gateway._core import Controller

SESSIONS = 200
GROUPS = 20


def grouped() -> Controller:
    c = Controller({"site_max_discharge_kw": 600, "site_max_charge_kw": 600})
    for g in range(GROUPS):
        c.set_group_schedule(g, [(START_S, 90_000.0 + 1000 * g), (START_S + 1800, 60_000.0)])
    for meter in range(SESSIONS):
        c.start_session(meter, 1 if meter % 3 else -1, 150_000.0, group=meter % GROUPS,
                        schedule=[(START_S, 40_000.0 + 100 * meter)])
    return c


def test_allocator_200_sessions_grouped(benchmark) -> None:
    c = grouped()
    counter = itertools.count()
    blocks = [block(2_000_000 + i) for i in range(64)]

    def one_step() -> dict:
        i = next(counter)
        return c.step(START_S + 0.1 * i, blocks[i % 64])

    out = benchmark(one_step)
    allocs = out["allocations"]
    assert len(allocs) == SESSIONS
    # The limits bind: demand (about 11 MW) is far above what the site lets through.
    assert 0 < sum(abs(w) for w in allocs.values()) <= 1_200_000.0 + 1e-6
