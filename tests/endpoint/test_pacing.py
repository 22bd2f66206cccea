"""The gateway-wide token bucket, on a clock the test moves (no sleeping)."""

from __future__ import annotations

import asyncio

import pytest

from bess_gateway.endpoint.pacing import TokenBucket


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)  # let other takers queue up behind the lock


def bucket(rate: float, burst: float | None = None) -> tuple[TokenBucket, FakeTime]:
    t = FakeTime()
    return TokenBucket(rate, burst, clock=t.clock, sleep=t.sleep), t


async def test_a_lone_message_leaves_at_once():
    b, t = bucket(50)
    await b.take()
    assert t.slept == [] and b.taken == 1
    assert b.burst == 10  # a fifth of a second's worth


async def test_a_backlog_leaves_at_the_rate():
    b, t = bucket(20, burst=4)
    start = t.now
    for _ in range(4 + 40):
        await b.take()
    # the burst at once, then one token per 1/20 s
    assert t.now - start == pytest.approx(40 / 20)
    assert all(s == pytest.approx(0.05) for s in t.slept)


async def test_tokens_come_back_while_idle_but_never_above_the_burst():
    b, t = bucket(10, burst=3)
    for _ in range(3):
        await b.take()
    t.now += 60  # a quiet minute
    for _ in range(3):
        await b.take()
    assert t.slept == []
    await b.take()
    assert t.slept == [pytest.approx(0.1)]


async def test_many_takers_share_the_rate_first_come_first_served():
    b, t = bucket(100, burst=1)
    order: list[int] = []

    async def taker(i: int) -> None:
        for _ in range(5):
            await b.take()
            order.append(i)

    start = t.now
    await asyncio.gather(*(taker(i) for i in range(20)))
    assert len(order) == 100
    assert t.now - start == pytest.approx(99 / 100)
    # no taker waits for another to finish all of its messages: waiters are served in turn
    assert set(order[:21]) == set(range(20))


async def test_rate_zero_is_unpaced():
    b, t = bucket(0)
    for _ in range(1000):
        await b.take()
    assert t.slept == [] and b.taken == 1000
    with pytest.raises(ValueError):
        TokenBucket(-1)
