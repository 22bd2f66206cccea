"""The wall-clock step detector: a step is a jump of the wall clock against the monotonic one."""

from __future__ import annotations

from bess_gateway.wall_clock import StepDetector


class Clocks:
    def __init__(self) -> None:
        self.wall = 1_000_000.0
        self.mono = 50.0

    def tick(self, s: float) -> None:
        self.wall += s
        self.mono += s


def test_steps_both_ways_are_reported_once_and_ticks_are_not() -> None:
    c = Clocks()
    d = StepDetector(wall=lambda: c.wall, mono=lambda: c.mono)
    c.tick(1.0)
    assert d.check() is None
    c.wall += 300.0  # NTP steps the clock forward
    c.tick(1.0)
    assert d.check() == 300.0
    c.tick(1.0)
    assert d.check() is None, "reported once"
    c.wall -= 3600.0
    assert d.check() == -3600.0
    c.wall += 0.2  # a slew, not a step
    c.tick(1.0)
    assert d.check() is None
