"""Small asyncio helpers shared by the OCPP side."""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait for ``event`` at most ``timeout`` seconds; True when it was set.

    Built on ``asyncio.timeout`` rather than ``asyncio.wait_for``: on Python 3.11, wait_for can
    swallow a cancellation that arrives as the inner wait completes, and a task that loops
    around it then never ends (seen here as a gateway that would not stop).
    """
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
