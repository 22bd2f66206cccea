"""Wall-clock steps, noticed from the offset between the wall and the monotonic clock.

A hub controller without a real-time clock boots at some old time and NTP steps its clock
forward later (or back, after a bad server). The control core evaluates schedules at the live
wall clock, so a step takes effect there at once; but the schedules the gateway hands over cover
`smart_charging.HORIZON` from the time they were built, so after a step they are rebuilt for the
new time (docs/control.md, "Time base").
"""

from __future__ import annotations

import time
from collections.abc import Callable

STEP_THRESHOLD_S = 1.0  # slews by NTP are far below this per check; a step is not


class StepDetector:
    """`check()` returns the step (s, + forward) when the wall clock moved against the
    monotonic clock by more than `threshold_s` since the last check, else None."""

    def __init__(self, threshold_s: float = STEP_THRESHOLD_S,
                 wall: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic) -> None:
        self.threshold_s = threshold_s
        self._wall = wall
        self._mono = mono
        self._offset = wall() - mono()

    def check(self) -> float | None:
        offset = self._wall() - self._mono()
        step = offset - self._offset
        self._offset = offset
        return step if abs(step) > self.threshold_s else None
