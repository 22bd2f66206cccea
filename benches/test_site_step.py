"""The load-step benchmark (benches/site_step.py) as a pytest-benchmark entry, short form.

BESS_SITE_STEPS overrides the 4 steps (about 20 s); `python benches/site_step.py` runs the
full table. Not in .ci/run: the CI budget is spent (docs/site.md has the measured table).
"""

from __future__ import annotations

import asyncio
import os

import site_step


def test_site_step_short(benchmark) -> None:
    args = site_step.parse_args(["--steps", os.environ.get("BESS_SITE_STEPS", "4"),
                                 "--hold-s", "2", "--rest-s", "1.5"])

    def run() -> site_step.Result:
        return asyncio.run(site_step.run(args))

    result = benchmark.pedantic(run, rounds=1, iterations=1)
    print("\n" + site_step.table(args, result))
    benchmark.extra_info.update(reaction_p99_ms=site_step.pct(result.reaction_ms, 99),
                                within_1pct_p99_ms=site_step.pct(result.settled_ms, 99))
    # Correctness, not timing: the gateway answered every step, and import came down to the
    # limit (within 1 %) within the hold each time.
    assert len(result.reaction_ms) == args.steps
    assert result.never_settled == 0 and len(result.settled_ms) == args.steps
