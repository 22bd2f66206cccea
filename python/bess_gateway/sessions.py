"""What a session's messages need whatever the OCPP version; 1.6 and 2.0.1 only say what to send.

- start/stop sequencing: authorize, then the durable record and the queued start message in the
  one commit made before power flows; on stop, power off, then the finished record and the queued
  stop message in one commit (both or neither survive a crash).
- the send-now-or-queue decision for messages cheap to lose (periodic meter values): straight out
  while the link is up and nothing waits ahead of them, through the journal's outbox otherwise.
- due times: per-session periodic samples (monotonic clock) and clock-aligned readings (wall
  clock, aligned to midnight UTC as both versions define them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from bess_gateway.aio import wait_event
from bess_gateway.domain.station import StopReason, Transaction
from bess_gateway.journal import Retention
from bess_gateway.link import Context
from bess_gateway.ocppj.errors import CallErrorReceived
from bess_gateway.ocppj.framing import new_unique_id

log = logging.getLogger("bess_gateway.sessions")

SEND_ERRORS = (CallErrorReceived, TimeoutError, ConnectionError)


def enqueue(ctx: Context, action: str, payload: dict[str, Any], tx: Transaction | None,
            retention: Retention = Retention.ALWAYS, unique_id: str | None = None) -> None:
    """Journal a message for ordered delivery (the outbox) and wake the delivery loop.

    `retention`: what the outbox may do with it when over its disk budget (journal.Retention).
    `unique_id`: the message id it already went out with, if it did (a resend keeps it).
    """
    ctx.journal.enqueue(ctx.endpoint_id, action, payload, tx.local_id if tx else None,
                        unique_id or new_unique_id(), retention)
    ctx.outbox_wake.set()


async def start(ctx: Context, connector: int, id_tag: str, *,
                authorized: Callable[[], Awaitable[bool]],
                queue_start: Callable[[Transaction], None]) -> Transaction | None:
    """Authorize, then begin: `queue_start(tx)` journals the version's start message together
    with the record, before power flows (a record without its queued start would be ended after
    a crash with nothing to refer to). The connector must have been prepared."""
    st = ctx.station
    if not await authorized():
        st.unprepare(connector)
        return None
    tx = st.begin(connector, id_tag, journal_with=queue_start)
    ctx.tx_wake.set()
    return tx


def stop(ctx: Context, connector: int, reason: StopReason,
         queue_stop: Callable[[Transaction], None]) -> Transaction | None:
    """Power off the connector's session and queue its stop message (journal first)."""
    # The finished record and its stop message in one commit: both or neither survive a crash,
    # and one fsync instead of two or three (load benchmark, issue 6).
    with ctx.journal.atomic():
        tx = ctx.station.end(connector, reason)
        if tx is None:
            return None
        queue_stop(tx)
    ctx.tx_wake.set()
    return tx


async def send_or_queue(ctx: Context, action: str, payload: dict[str, Any],
                        tx: Transaction | None, *, direct: bool = True,
                        retention: Retention = Retention.ALWAYS) -> bool:
    """Send now when the link is up and the outbox is empty (nothing may overtake a queued
    message), else queue. `direct=False` forces the queue. Returns True when sent now."""
    unique_id = new_unique_id()
    rpc = ctx.rpc
    if direct and ctx.online and rpc is not None and ctx.journal.depth(ctx.endpoint_id) == 0:
        try:
            await rpc.call(action, payload, unique_id=unique_id)
            return True
        except SEND_ERRORS as exc:
            log.info("%s: %s not delivered (%s); queued", ctx.endpoint_id, action, exc)
    # Queued under the id it may already have reached the CSMS with (an answer lost with the
    # socket): the resend is recognisable as the same message.
    enqueue(ctx, action, payload, tx, retention, unique_id)
    return False


class DueTimes:
    """When each running session's next periodic sample is due (monotonic seconds)."""

    def __init__(self) -> None:
        self._due: dict[str, float] = {}

    def due(self, keys: Iterable[str], now: float, interval: float) -> list[str]:
        """Track exactly `keys` (new ones are first due one interval from now) and return those
        due now, moving each to its next time (never bunched after a stall)."""
        keys = list(keys)
        for k in keys:
            self._due.setdefault(k, now + interval)
        for k in [k for k in self._due if k not in keys]:
            del self._due[k]
        out = []
        for k in keys:
            if self._due[k] <= now:
                self._due[k] = max(self._due[k] + interval, now + interval / 2)
                out.append(k)
        return out

    def timeout(self, now: float) -> float | None:
        return max(0.0, min(self._due.values()) - now) if self._due else None


async def sample_loop(ctx: Context, interval: Callable[[], int],
                      send: Callable[[Transaction], Awaitable[None]],
                      each_turn: Callable[[], Awaitable[None]] | None = None) -> None:
    """Call `send(tx)` every `interval()` s for each running session; `each_turn` runs on every
    wake of ctx.tx_wake (sessions started or stopped, statuses changed)."""
    loop = asyncio.get_running_loop()
    due = DueTimes()
    while True:
        ctx.tx_wake.clear()
        if each_turn is not None:
            await each_turn()
        txs = {tx.local_id: tx for tx in list(ctx.station.transactions.values())}
        for local_id in due.due(txs, loop.time(), interval()):
            try:
                await send(txs[local_id])
            except SEND_ERRORS as exc:
                log.info("%s: sample not sent: %s", ctx.endpoint_id, exc)
        await wait_event(ctx.tx_wake, due.timeout(loop.time()))


def next_aligned(now: datetime, interval_s: int) -> datetime:
    """The next clock-aligned instant after `now`: midnight UTC + k * interval, restarting at
    midnight when the interval does not divide the day (1.6 ClockAlignedDataInterval, 2.0.1
    AlignedDataCtrlr.Interval)."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    since = (now - midnight).total_seconds()
    k = int(since // interval_s) + 1
    nxt = midnight + timedelta(seconds=k * interval_s)
    return min(nxt, midnight + timedelta(days=1))


def aligned_wake(ctx: Context) -> asyncio.Event:
    """An event set whenever the aligned interval changes (made once per endpoint)."""
    wake = ctx.extra.get("aligned_wake")
    if wake is None:
        wake = ctx.extra["aligned_wake"] = asyncio.Event()

        def changed(name: str) -> None:
            if name == "clock_aligned_interval_s":
                wake.set()

        ctx.station.settings.on_change(changed)
    assert isinstance(wake, asyncio.Event)
    return wake


async def aligned_loop(ctx: Context, send: Callable[[], Awaitable[None]]) -> None:
    """Call `send()` at every clock-aligned instant while the interval (setting
    clock_aligned_interval_s) is above 0."""
    wake = aligned_wake(ctx)
    while True:
        wake.clear()
        interval = ctx.station.settings.int("clock_aligned_interval_s")
        if interval <= 0:
            await wake.wait()
            continue
        now = ctx.station._clock()
        if await wait_event(wake, (next_aligned(now, interval) - now).total_seconds()):
            continue  # the interval changed: align afresh
        try:
            await send()
        except SEND_ERRORS as exc:
            log.info("%s: clock-aligned values not sent: %s", ctx.endpoint_id, exc)
