"""Pacing of queued messages: one token bucket shared by every endpoint of a gateway.

After an outage, hundreds of endpoints reconnect within seconds, each with a backlog in the
journal's outbox. Each endpoint already sends one message at a time, but 200 of them in parallel
would still flood a CSMS. Every queued message takes a token before it leaves; tokens come back
at `rate_per_s` for the whole gateway. The bucket holds `burst` tokens, so a live message (a new
StopTransaction while nothing is queued) finds one waiting and leaves at once.

Waiters are served first come, first served (an asyncio.Lock queues them fairly), so no endpoint
starves while the others drain.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class TokenBucket:
    """`rate_per_s` tokens per second, at most `burst` held; rate 0 = no pacing."""

    def __init__(
        self,
        rate_per_s: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate_per_s < 0:
            raise ValueError(f"rate_per_s must be >= 0, got {rate_per_s}")
        self.rate = float(rate_per_s)
        # A fifth of a second's worth by default: enough that live traffic never waits, small
        # enough that a mass reconnect is paced from its first messages.
        self.burst = float(burst) if burst is not None else max(1.0, self.rate / 5)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._stamp = clock()
        self._lock = asyncio.Lock()
        self.taken = 0
        self.waited_s = 0.0  # total time takers spent waiting (metrics)

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def delay(self) -> float:
        """Seconds until a token is free (0: one is free now)."""
        self._refill()
        # (a hair under one counts as one: float rounding must not leave a waiter spinning)
        return 0.0 if self._tokens >= 1.0 - 1e-9 else (1.0 - self._tokens) / self.rate

    async def take(self) -> None:
        """Wait for a token and take it."""
        if self.rate <= 0:
            self.taken += 1
            return
        async with self._lock:
            while (wait := self.delay()) > 0:
                self.waited_s += wait
                await self._sleep(wait)
            self._tokens = max(0.0, self._tokens - 1.0)
            self.taken += 1
