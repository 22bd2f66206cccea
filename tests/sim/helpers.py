"""Polling helpers: wait for a condition with a bounded timeout instead of sleeping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    *,
    timeout_s: float = 3.0,
    interval_s: float = 0.02,
) -> T:
    """Await ``probe()`` until ``accept`` holds on its result; fail with the last one seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s; last value: {value!r}")
        await asyncio.sleep(interval_s)


def eventually_sync(
    probe: Callable[[], T],
    accept: Callable[[T], bool],
    *,
    timeout_s: float = 3.0,
    interval_s: float = 0.02,
) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s; last value: {value!r}")
        time.sleep(interval_s)
