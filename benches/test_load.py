"""The load benchmark as a pytest-benchmark entry, in its short CI form.

BESS_LOAD_ENDPOINTS / BESS_LOAD_SECONDS override N = 50 and 20 s; `python benches/load.py`
runs the full table (50, 200, 1000).
"""

from __future__ import annotations

import asyncio
import os

import load


def test_load_short(benchmark) -> None:
    n = int(os.environ.get("BESS_LOAD_ENDPOINTS", "50"))
    seconds = float(os.environ.get("BESS_LOAD_SECONDS", "20"))

    def run() -> list[load.Row]:
        ours = asyncio.run(load.run_one(n, seconds, 1, baseline=False))
        base = asyncio.run(load.run_one(n, seconds, 1, baseline=True))
        return [ours, base]

    ours, base = benchmark.pedantic(run, rounds=1, iterations=1)
    print("\n" + load.table([ours, base], {n: base}))
    if ours.limit_ms:
        print(f"decrease->limit reached ms p50/p99/max: {load.fmt3(ours.limit_ms)}, writes to "
              f"reach it max {max(ours.limit_writes)} (n={len(ours.limit_ms)})")
    benchmark.extra_info.update(
        cmd_p50_ms=load.pct(ours.cmd_ms, 50), cmd_p99_ms=load.pct(ours.cmd_ms, 99),
        trigger_p99_ms=load.pct(ours.trig_ms, 99), cpu_per_1000=ours.cpu_per_1000,
        limit_p99_ms=load.pct(ours.limit_ms, 99) if ours.limit_ms else None,
        baseline_cpu_per_1000=base.cpu_per_1000, jitter_p99_ms=ours.jitter_p99_ms,
        loop_lag_p99_ms=ours.lag.p99_ms if ours.lag else None)
    if ours.lag is not None:
        print(load.lag_line(ours))
    # Correctness, not timing: under load nothing may fail and every command must show effect.
    assert ours.errors == 0, ours.notes
    assert base.errors == 0, base.notes
    assert ours.cmd_ms and ours.trig_ms
