"""What a session's messages need whatever the OCPP version; 1.6 and 2.0.1 only say what to send.

- start/stop sequencing: authorize, then the durable record and the queued start message in the
  one commit made before power flows; on stop, power off, then the finished record and the queued
  stop message in one commit (both or neither survive a crash).
- the send-now-or-queue decision for messages cheap to lose (periodic meter values): straight out
  while the link is up and nothing waits ahead of them, through the journal's outbox otherwise.
- due times: per-session periodic samples (monotonic clock) and clock-aligned readings (wall
  clock, aligned to midnight UTC as both versions define them).
- the samples a stop message carries besides its end reading (1.6 StopTxnSampledData /
  StopTxnAlignedData, 2.0.1 TxEndedMeasurands / TxEndedInterval): `keep_loop` keeps them in the
  transaction's record (domain.metering.keep: bounded, thinned evenly); each version renders them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from bess_gateway.aio import wait_event
from bess_gateway.domain import metering
from bess_gateway.domain.settings import Settings
from bess_gateway.domain.station import MeterSample, StopReason, Transaction
from bess_gateway.domain.transaction_facts import KeptSamples
from bess_gateway.endpoint.link import Context
from bess_gateway.journal import OutboxItem, Retention
from bess_gateway.ocpp.errors import CallErrorReceived
from bess_gateway.ocpp.framing import new_unique_id

log = logging.getLogger("bess_gateway.endpoint.sessions")

SEND_ERRORS = (CallErrorReceived, TimeoutError, ConnectionError)
# How often a session under an energy allowance has its meter checked (the core's meters move
# every cycle): at session power this overshoots an allowance by a few Wh at most.
ENERGY_CHECK_S = 0.25


def enqueue(ctx: Context, action: str, payload: dict[str, Any], tx: Transaction | None,
            retention: Retention = Retention.ALWAYS, unique_id: str | None = None) -> None:
    """Journal a message for ordered delivery (the outbox) and wake the delivery loop.

    `retention`: what the outbox may do with it when over its disk budget (journal.Retention).
    `unique_id`: the message id it already went out with, if it did (a resend keeps it).
    """
    ctx.journal.outbox.enqueue(ctx.endpoint_id, action, payload, tx.local_id if tx else None,
                        unique_id or new_unique_id(), retention)
    ctx.outbox_wake.set()


@dataclass(frozen=True, slots=True)
class KeepRule:
    """What `keep_loop` keeps: its intervals (0: none of that kind) and whether a session is
    kept yet."""

    periodic: Callable[[], int]
    aligned: Callable[[], int]
    active: Callable[[Transaction], bool]


class KeptValues:
    """The kept-meter-values state of one endpoint: the keep loop's wakes and its rule."""

    def __init__(self, settings: Settings) -> None:
        # Set on every settings change (the intervals may depend on several) and, for the
        # periodic keeper, when a session starts.
        self.wake = asyncio.Event()
        self.aligned_wake = asyncio.Event()
        self.rule: KeepRule | None = None  # None until keep_loop runs: nothing is kept
        settings.on_change(lambda _name: self.wake.set())
        settings.on_change(lambda _name: self.aligned_wake.set())


class SessionState:
    """The wakes of one endpoint's session loops, made once with the endpoint."""

    def __init__(self, settings: Settings, tx_wake: asyncio.Event) -> None:
        self.prepare_wake = asyncio.Event()  # a connector was prepared (preparing_watch)
        self.aligned_wake = asyncio.Event()  # the aligned interval changed (aligned_loop)

        def changed(name: str) -> None:
            if name == "clock_aligned_interval_s":
                self.aligned_wake.set()

        settings.on_change(changed)
        # With a sample interval of 0 the sample loop's wait has no end of its own: a new one
        # must end it (any setting: the interval may be any of several).
        settings.on_change(lambda _name: tx_wake.set())


def prepare(ctx: Context, connector: int) -> None:
    """A remote start was accepted: the connector is Preparing until its session begins, the
    start fails, or ConnectionTimeOut (1.6; 2.0.1 TxCtrlr.EVConnectionTimeOut) passes without
    a start (`preparing_watch`): whatever goes wrong in between (the answer not sent, the link
    lost during Authorize, the journal failing), it never stays Preparing until a restart."""
    until = asyncio.get_running_loop().time() + \
        ctx.station.settings.int("connection_timeout_s")
    ctx.station.prepare(connector, until)
    ctx.services.sessions.prepare_wake.set()


async def preparing_watch(ctx: Context) -> None:
    """Release preparations no start followed within ConnectionTimeOut (a lifelong job: it
    runs with or without a link, as a lost link is one way the start never comes)."""
    loop = asyncio.get_running_loop()
    wake = ctx.services.sessions.prepare_wake
    while True:
        wake.clear()
        for connector in ctx.station.expire_preparing(loop.time()):
            log.warning("%s: connector %d: no session started within ConnectionTimeOut of the "
                        "remote start; Available again", ctx.endpoint_id, connector)
        deadline = ctx.station.next_preparing_deadline()
        await wait_event(wake, None if deadline is None else max(0.0, deadline - loop.time()))


async def start(ctx: Context, connector: int, id_tag: str, *,
                authorized: Callable[[], Awaitable[bool]],
                queue_start: Callable[[Transaction], None]) -> Transaction | None:
    """Authorize, then begin: `queue_start(tx)` journals the version's start message together
    with the record, before power flows (a record without its queued start would be ended after
    a crash with nothing to refer to). The connector must have been prepared (`prepare`).

    Whatever ends the start before its session begins (refused, the link lost during
    Authorize, the journal failing) releases the connector's preparation, if it is still this
    start's: one that lapsed meanwhile (ConnectionTimeOut) may belong to a newer start."""
    st = ctx.station
    mine = st.preparing.get(connector)
    began = False
    try:
        if mine is None:
            log.warning("%s: connector %d: the remote start's preparation lapsed before it "
                        "could begin; not started", ctx.endpoint_id, connector)
            return None
        tx = await _start(ctx, connector, id_tag, authorized, queue_start, mine)
        began = tx is not None
        return tx
    finally:
        if not began and mine is not None and st.preparing.get(connector) == mine:
            st.unprepare(connector)


async def _start(ctx: Context, connector: int, id_tag: str,
                 authorized: Callable[[], Awaitable[bool]],
                 queue_start: Callable[[Transaction], None], mine: float) -> Transaction | None:
    st = ctx.station
    if not registration_allows_start(ctx):
        log.info("%s: connector %d: no start while the boot is %s (TxBeforeAcceptedEnabled "
                 "false)", ctx.endpoint_id, connector, ctx.registration)
        return None
    if not await authorized():
        return None
    if st.preparing.get(connector) != mine:
        # ConnectionTimeOut passed while Authorize was on its way: the connector was released
        # (and may have been prepared again for another start).
        log.warning("%s: connector %d: authorized after the remote start's preparation "
                    "lapsed; not started", ctx.endpoint_id, connector)
        return None

    def journal_with(tx: Transaction) -> None:
        queue_start(tx)
        if _keeping(ctx, tx):
            # The start's reading, before power flows: its register is meterStart.
            sample = replace(st.sample(connector), timestamp=tx.started_at,
                             energy_wh=float(tx.meter_start_wh))
            metering.keep_begin(tx.facts.kept, sample)
            st.record(tx)  # in the start's commit

    tx = st.begin(connector, id_tag, journal_with=journal_with)
    ctx.tx_wake.set()
    ctx.services.kept.wake.set()
    return tx


def registration_allows_start(ctx: Context) -> bool:
    """Whether a session may start as far as the CSMS's registration goes: not while the boot
    is Pending or Rejected, unless tx_before_accepted_enabled (2.0.1 B02/B03
    TxBeforeAcceptedEnabled; 1.6 4.2.1 leaves it to the operator). Before any answer (no CSMS
    reached since the start) the offline rules decide, as for any offline start."""
    if ctx.accepted or ctx.registration not in ("Pending", "Rejected"):
        return True
    return ctx.station.settings.bool("tx_before_accepted_enabled")


def id_invalidated(ctx: Context, tx: Transaction, stop: Callable[[], object]) -> None:
    """The CSMS answered that a running session's idTag is not valid (1.6 StartTransaction.conf,
    2.0.1 TransactionEventResponse; the version layer says when). StopTransactionOnInvalidId /
    StopTxOnInvalidId: `stop()` ends it (DeAuthorized). Otherwise it may go on delivering
    MaxEnergyOnInvalidId Wh counted from its start, then is held at 0 W (SuspendedEVSE) and
    stays open until the CSMS or the EV ends it."""
    settings = ctx.station.settings
    if settings.bool("stop_tx_on_invalid_id"):
        log.info("%s: session %s deauthorized by the CSMS; stopping", ctx.endpoint_id,
                 tx.local_id[:8])
        stop()
        return
    if ctx.station.limit_energy(tx.connector, settings.int("max_energy_on_invalid_id_wh")):
        ctx.tx_wake.set()  # the sample loop watches the allowance from now on


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


# -- transactions the CSMS never got -----------------------------------------------------------
def abandon(ctx: Context, item: OutboxItem, connector: int | None, meter_start_wh: int | None,
            stop: Callable[[Context, int], object] | None) -> None:
    """The start message `item` was given up (the CSMS failed to process it as many times as
    the attempts setting allows): the CSMS has no transaction to refer the rest to.

    In one commit: the start leaves the queue, the transaction is marked abandoned (counted in
    the endpoint's totals: metrics, /status) and, when its session still runs, the session ends
    here (power off; its stop message queues as any other). The transaction's other messages
    are then dropped as they come up, never sent (`drop_if_abandoned`): a MeterValues or
    StopTransaction for a transaction the CSMS never got would only be refused, and a 2.0.1
    Updated/Ended would start a transaction that has no Started. The energy the stop message
    carries goes to the endpoint's unattributed energy: delivered, logged, counted, never billed.
    """
    st = ctx.station
    local_id = item.local_tx_id
    if local_id is None:  # no transaction to abandon (never so for a start message)
        ctx.journal.outbox.ack(item.seq)
        return
    tx = next((t for t in st.transactions.values() if t.local_id == local_id), None)
    if tx is not None:
        connector, meter_start_wh = tx.connector, tx.meter_start_wh
    with ctx.journal.atomic():
        ctx.journal.outbox.ack(item.seq)
        ctx.journal.abandoned.abandon_transaction(ctx.endpoint_id, local_id, connector or 0,
                                        meter_start_wh)
        if tx is not None and stop is not None:
            stop(ctx, tx.connector)
    log.error("%s: transaction %s (connector %s) abandoned: the CSMS failed to process its "
              "%s; %s its other queued messages are dropped and its energy is counted as "
              "unattributed (bess_energy_unattributed_wh_total)", ctx.endpoint_id, local_id[:8],
              connector, item.action,
              "its session is ended here;" if tx is not None else "it had already ended;")


def drop_if_abandoned(ctx: Context, item: OutboxItem) -> bool:
    """Drop `item` if its transaction was abandoned (True); its stop message's energy is added
    to the unattributed energy in the same commit (held until settled, as any stop)."""
    marker = ctx.journal.abandoned.abandoned_transaction(ctx.endpoint_id, item.local_tx_id)
    if marker is None or item.local_tx_id is None:
        return False
    is_stop, register = ctx.services.settling.stop_register(item.action, item.payload)
    if not is_stop:
        log.debug("%s: %s of abandoned transaction %s dropped", ctx.endpoint_id, item.action,
                  item.local_tx_id[:8])
        ctx.journal.outbox.ack(item.seq)
        return True
    connector = int(marker.get("connector") or 0)
    start = marker.get("meter_start_wh")
    energy = None if register is None or start is None else max(0, register - int(start))
    with ctx.journal.atomic():
        ctx.journal.outbox.ack(item.seq)
        ctx.journal.abandoned.settle_abandoned(ctx.endpoint_id, item.local_tx_id, connector, energy)
    ctx.station.finished(item.local_tx_id)  # no stop will be confirmed: Finishing ends here
    log.error("%s: abandoned transaction %s: %s Wh delivered on connector %d, unattributed "
              "(its %s is not sent: the CSMS never got its start)", ctx.endpoint_id,
              item.local_tx_id[:8], "unknown" if energy is None else energy, connector,
              item.action)
    return True


async def send_or_queue(ctx: Context, action: str, payload: dict[str, Any],
                        tx: Transaction | None, *, direct: bool = True,
                        retention: Retention = Retention.ALWAYS) -> bool:
    """Send now when the link is up and the outbox is empty (nothing may overtake a queued
    message), else queue. `direct=False` forces the queue. Returns True when sent now."""
    unique_id = new_unique_id()
    rpc = ctx.rpc
    if direct and ctx.online and rpc is not None and ctx.journal.outbox.depth(ctx.endpoint_id) == 0:
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
    """Call `send(tx)` every `interval()` s (0: never) for each running session; `each_turn` runs
    on every wake of ctx.tx_wake (sessions started or stopped, statuses changed, settings changed).
    Sessions under an energy allowance (id_invalidated) have their meter checked every
    ENERGY_CHECK_S until held."""
    loop = asyncio.get_running_loop()
    due = DueTimes()
    while True:
        ctx.tx_wake.clear()
        ctx.station.enforce_energy_limits()
        if each_turn is not None:
            await each_turn()
        every = interval()
        # 0 = no sampled data (1.6 MeterValueSampleInterval, 2.0.1 TxUpdatedInterval): no session
        # is tracked, so each is first due one interval after a non-zero value is set.
        txs = {tx.local_id: tx for tx in list(ctx.station.transactions.values())} \
            if every > 0 else {}
        for local_id in due.due(txs, loop.time(), every):
            try:
                await send(txs[local_id])
            except SEND_ERRORS as exc:
                log.info("%s: sample not sent: %s", ctx.endpoint_id, exc)
        timeout = due.timeout(loop.time())
        if ctx.station.energy_limits_pending():
            timeout = ENERGY_CHECK_S if timeout is None else min(timeout, ENERGY_CHECK_S)
        await wait_event(ctx.tx_wake, timeout)


def next_aligned(now: datetime, interval_s: int) -> datetime:
    """The next clock-aligned instant after `now`: midnight UTC + k * interval, restarting at
    midnight when the interval does not divide the day (1.6 ClockAlignedDataInterval, 2.0.1
    AlignedDataCtrlr.Interval)."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    since = (now - midnight).total_seconds()
    k = int(since // interval_s) + 1
    nxt = midnight + timedelta(seconds=k * interval_s)
    return min(nxt, midnight + timedelta(days=1))


async def aligned_loop(ctx: Context, send: Callable[[], Awaitable[None]],
                       interval: Callable[[], int] | None = None,
                       wake: asyncio.Event | None = None) -> None:
    """Call `send()` at every clock-aligned instant while the interval (`interval()`, by default
    the setting clock_aligned_interval_s) is above 0; `wake` is set when it changes."""
    if interval is None:
        interval, wake = (lambda: ctx.station.settings.int("clock_aligned_interval_s"),
                          ctx.services.sessions.aligned_wake)
    assert wake is not None
    while True:
        wake.clear()
        every = interval()
        if every <= 0:
            await wake.wait()
            continue
        now = ctx.station.now()
        if await wait_event(wake, (next_aligned(now, every) - now).total_seconds()):
            continue  # the interval changed: align afresh
        try:
            await send()
        except SEND_ERRORS as exc:
            log.info("%s: clock-aligned values not sent: %s", ctx.endpoint_id, exc)


# -- samples kept for the stop message ---------------------------------------------------------
def _keeping(ctx: Context, tx: Transaction) -> bool:
    """Whether a session starting now keeps its start's reading (Transaction.Begin)."""
    rule = ctx.services.kept.rule
    if rule is None:
        return False
    return bool(rule.active(tx)) and (rule.periodic() > 0 or rule.aligned() > 0)


def _keep(ctx: Context, tx: Transaction, context: str,
          active: Callable[[Transaction], bool]) -> None:
    st = ctx.station
    # Never for a session already ended: its record is gone and must stay gone.
    if st.transactions.get(tx.connector) is not tx or not active(tx):
        return
    if metering.keep(tx.facts.kept, context, st.sample(tx.connector)):
        st.record(tx)  # what the stop message will carry survives a crash


async def keep_loop(ctx: Context, periodic: Callable[[], int], aligned: Callable[[], int],
                    active: Callable[[Transaction], bool] = lambda tx: True) -> None:
    """Keep each running session's samples for its stop message: every `periodic()` s from its
    start and at every clock-aligned instant of `aligned()` s (0: none of that kind; with both
    0 nothing is kept, not even the start's reading). A kind whose measurands
    (stop_txn_sampled_data / stop_txn_aligned_data) are empty is not kept either.
    `active(tx)`: whether it is kept yet."""
    settings = ctx.station.settings
    given_periodic, given_aligned = periodic, aligned

    def periodic() -> int:
        return given_periodic() if settings.items("stop_txn_sampled_data") else 0

    def aligned() -> int:
        return given_aligned() if settings.items("stop_txn_aligned_data") else 0

    kept = ctx.services.kept
    kept.rule = KeepRule(periodic, aligned, active)
    wake = kept.wake

    async def periodic_loop() -> None:
        loop = asyncio.get_running_loop()
        due = DueTimes()
        while True:
            wake.clear()
            every = periodic()
            if every <= 0:
                due = DueTimes()
                await wake.wait()
                continue
            txs = {tx.local_id: tx for tx in list(ctx.station.transactions.values())}
            for local_id in due.due(txs, loop.time(), every):
                _keep(ctx, txs[local_id], metering.PERIODIC, active)
            await wait_event(wake, due.timeout(loop.time()))

    async def at_aligned() -> None:
        for tx in list(ctx.station.transactions.values()):
            _keep(ctx, tx, metering.CLOCK, active)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(periodic_loop())
        tg.create_task(aligned_loop(ctx, at_aligned, aligned, kept.aligned_wake))


def kept_meter_values(ctx: Context, store: KeptSamples, connector: int,
                      render: Callable[[MeterSample, list[str], str], dict[str, Any]],
                      size: Callable[[list[dict[str, Any]]], int]) -> list[dict[str, Any]]:
    """The kept samples as the version's meter values (`render(sample, measurands, context)`),
    Transaction.Begin first, then in time order; intermediate ones are thinned evenly while
    `size(values)`, the stop message's length with them, is over metering.STOP_MESSAGE_BYTES.
    Begin and periodic samples show StopTxnSampledData / TxEndedMeasurands, clock-aligned ones
    StopTxnAlignedData / AlignedDataCtrlr.TxEndedMeasurands."""
    settings = ctx.station.settings
    sampled, aligned = (settings.items("stop_txn_sampled_data"),
                        settings.items("stop_txn_aligned_data"))
    values = [(context, mv) for context, sample in metering.kept(store, connector,
                                                                   ctx.station.flow(connector))
              if (mv := render(sample, aligned if context == metering.CLOCK else sampled,
                               context))["sampledValue"]]
    values = metering.fit(values, lambda vs: size([mv for _, mv in vs]),
                          fixed=lambda v: v[0] == metering.BEGIN)
    return [mv for _, mv in values]
