"""Waiting on real parts: bounded polls of a condition, never a fixed sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


async def until(pred: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``pred`` until it is truthy (at most ``timeout`` s) and return its value."""
    async with asyncio.timeout(timeout):
        while not (value := pred()):
            await asyncio.sleep(0.02)
        return value
