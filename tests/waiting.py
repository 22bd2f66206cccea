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


async def booted(gw: Any, csms: Any) -> list[str]:
    """Wait until every endpoint of gateway ``gw`` has booted at the demo CSMS; their ids."""
    ids = list(gw.endpoints)
    for sid in ids:
        await csms.wait_for(sid, "BootNotification", timeout=20)
        await until(lambda s=sid: gw.endpoints[s].booted.is_set(), 20)
    return ids
