"""systemd's service notification protocol (sd_notify) with the standard library.

Under `Type=notify` systemd passes a unix datagram socket in NOTIFY_SOCKET ("@name" is an
abstract socket); one datagram per state change. With `WatchdogSec=` it also sets WATCHDOG_USEC
(and WATCHDOG_PID, the process it applies to); we ping at half that period. Outside systemd
every function here is a no-op, so the gateway runs the same from a shell.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable

log = logging.getLogger(__name__)

__all__ = ["notify", "watchdog", "watchdog_interval"]


def _address() -> str | None:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path or path[0] not in "/@":
        return None
    return "\0" + path[1:] if path[0] == "@" else path


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1"); True when a notification socket took it."""
    address = _address()
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        # systemd gone or the socket not ours: the service itself must keep running.
        log.warning("sd_notify %r failed: %s", state.split("\n", 1)[0], exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when not asked for."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or _address() is None:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


async def watchdog(healthy: Callable[[], bool]) -> None:
    """Ping systemd's watchdog while `healthy()` holds; returns at once when not asked for.

    Pinging from the event loop proves the loop runs; `healthy` adds what the loop cannot see
    (the control thread still cycling). A missed ping makes systemd restart the service.
    """
    interval = watchdog_interval()
    if interval is None:
        return
    while True:
        await asyncio.sleep(interval)
        if healthy():
            notify("WATCHDOG=1")
        else:
            log.error("not pinging the systemd watchdog: the control loop has stalled")
