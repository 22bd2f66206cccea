"""Event-loop lag: how late the gateway's event loop gets round to what is due.

Every endpoint, the journal's commits and the metrics server share one event loop, so anything
that holds it (an fsync, a long computation, a burst of messages) delays all of them. The monitor
measures that from inside: a task sleeps `INTERVAL_S` and records how much later than asked it
woke up, in `loop.time()` (the clock the loop schedules by, so a wall-clock step is no lag).
A loop held for 200 ms therefore shows as one sample of 150-200 ms (the hold minus what was left
of the sleep), not as several: the next sleep is counted from the late wake-up.

Under uvloop `loop.time()` has a resolution of 1 ms (libuv's clock), so the samples are whole
milliseconds there; the lowest bucket (0.5 ms) separates "on time" from "1 ms late".

Exposed on /metrics as `bess_event_loop_lag_seconds` (a histogram, every sample) and
`bess_event_loop_lag_max_seconds` (the largest sample of the last minute, read at scrape time).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Final

from prometheus_client import CollectorRegistry, Gauge, Histogram

log = logging.getLogger(__name__)

__all__ = ["BUCKETS", "INTERVAL_S", "WINDOW_S", "LoopLagMonitor", "RecentMax"]

INTERVAL_S: Final = 0.05
WINDOW_S: Final = 60.0
#: Fine at the low end, where a healthy loop lives (an fsync on a busy disk is 5-13 ms), up to
#: the second that would already stall the endpoints' heartbeats.
BUCKETS: Final = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
                  0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)


class RecentMax:
    """The largest value added within the last `window_s`, in O(1) amortised per value.

    A monotonic queue: a value hides every older one that is not larger, since those leave the
    window first and can never be the maximum again. Time is a parameter (any clock, as long as
    `add` and `max` use the same one).
    """

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._items: deque[tuple[float, float]] = deque()  # (t, value), values decreasing

    def add(self, t: float, value: float) -> None:
        while self._items and self._items[-1][1] <= value:
            self._items.pop()
        self._items.append((t, value))
        self._expire(t)

    def max(self, now: float) -> float:
        """0.0 when nothing was added within the window."""
        self._expire(now)
        return self._items[0][1] if self._items else 0.0

    def _expire(self, now: float) -> None:
        while self._items and self._items[0][0] <= now - self.window_s:
            self._items.popleft()


class LoopLagMonitor:
    """Registers the two metrics on `registry`; `run()` is the task that samples."""

    def __init__(self, registry: CollectorRegistry, *, interval_s: float = INTERVAL_S,
                 window_s: float = WINDOW_S) -> None:
        self.interval_s = interval_s
        self.histogram = Histogram(
            "bess_event_loop_lag_seconds",
            f"how late the event loop ran a task due every {interval_s * 1000:g} ms",
            buckets=BUCKETS, registry=registry)
        self.recent = RecentMax(window_s)
        self._loop: asyncio.AbstractEventLoop | None = None
        gauge = Gauge("bess_event_loop_lag_max_seconds",
                      f"largest event-loop lag of the last {window_s:g} s", registry=registry)
        gauge.set_function(self._recent_max)

    def _recent_max(self) -> float:
        return 0.0 if self._loop is None else self.recent.max(self._loop.time())

    async def run(self) -> None:
        """Samples until cancelled; a failure is logged (the gateway runs on without it)."""
        try:
            loop = self._loop = asyncio.get_running_loop()
            while True:
                due = loop.time() + self.interval_s
                await asyncio.sleep(self.interval_s)
                now = loop.time()
                lag = max(0.0, now - due)
                self.histogram.observe(lag)
                self.recent.add(now, lag)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("event-loop lag monitor failed; bess_event_loop_lag_* no longer "
                          "updated")
