"""What every OCPP endpoint shares, whatever its version: the connection lifecycle and context.

An endpoint connects, boots until accepted, runs its periodic work, and reconnects with back-off
when anything ends the link. The 1.6 and 2.0.1 endpoints (``v16.endpoint``, ``v201.endpoint``)
subclass :class:`EndpointBase` and only say what differs: subprotocol, boot payload, status
messages, feature-block handlers. One endpoint never takes another down: everything it runs lives
in its own tasks, and every failure ends in a reconnect with back-off rather than an exception
leaving ``run()``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.frames import CloseCode
from websockets.typing import Subprotocol

from bess_gateway.aio import wait_event
from bess_gateway.config import EndpointConfig
from bess_gateway.domain.settings import SettingError, Settings
from bess_gateway.domain.station import Station
from bess_gateway.endpoint.pacing import TokenBucket
from bess_gateway.journal import Journal
from bess_gateway.ocpp.errors import CallErrorReceived, InvalidAnswer
from bess_gateway.ocpp.rpc import RpcConnection
from bess_gateway.security.certificates import CertificateStore, operator_directory

if TYPE_CHECKING:
    from bess_gateway.endpoint.services import EndpointServices

log = logging.getLogger("bess_gateway.endpoint.link")

RECONNECT_GRACE_S = 2.0  # how long a reconnect waits for our CALL in flight to be answered
MAX_FRAME = 256 * 1024  # no legitimate frame comes near; bigger ones close the socket (1009)
GOING_AWAY_REASON = "gateway shutting down"
STATUS_RETRY_S = 1.0  # a StatusNotification lost (timeout, link gone) is sent again this soon
# Set to "1" (the test suite does), every CALL and CALLRESULT we send is schema-checked first: it
# catches our own bugs; in production what we build is trusted, which saves ~15 us per message.
VALIDATE_OUTGOING_ENV = "BESS_GATEWAY_VALIDATE_OUTGOING"


class Backoff:
    """Reconnect back-off of OCPP 2.0.1 (part 4, "Reconnecting"); 1.6 uses the same rule.

    The wait after the n-th failed attempt in a row (n = 0, 1, ...) is

        minimum * 2 ** min(n, repeat_times) + uniform(0, random_range)

    (2.0.1 RetryBackOffWaitMinimum, RetryBackOffRepeatTimes, RetryBackOffRandomRange): doubled
    after every failure up to `repeat_times` doublings, then constant. It never gives up. The
    random part is drawn anew for every attempt, so endpoints that lost the same CSMS at the same
    moment spread their attempts over `random_range` seconds instead of retrying in lockstep.

    With `settings`, the three parameters are read from the endpoint's settings
    (`retry_backoff_*`) at every attempt, so a CSMS's change applies to the next wait.
    """

    def __init__(
        self,
        minimum: float = 3.0,
        random_range: float = 10.0,
        repeat_times: int = 6,
        *,
        settings: Settings | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.minimum = minimum
        self.random_range = random_range
        self.repeat_times = repeat_times
        self.settings = settings
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The wait before the next attempt; counts this as one more failure."""
        if self.settings is not None:
            self.minimum = self.settings.int("retry_backoff_wait_minimum_s")
            self.random_range = self.settings.int("retry_backoff_random_range_s")
            self.repeat_times = self.settings.int("retry_backoff_repeat_times")
        doublings = min(self.attempt, self.repeat_times)
        self.attempt += 1
        return self.minimum * 2**doublings + self._rng.uniform(0.0, self.random_range)

    def reset(self) -> None:
        """A connection was accepted (boot): the next failure waits the minimum again."""
        self.attempt = 0


@dataclass
class Context:
    """What an endpoint's feature blocks share: the station, the journal, the CSMS link and the
    endpoint's services (`services`: outbox, settling, smart charging, ...,
    bess_gateway.endpoint.services).

    Blocks get this passed in (libocpp's functional blocks) rather than living in one big class.
    A version keeps its own per-endpoint state in a subclass (v201.context.Context201).
    """

    cfg: EndpointConfig
    station: Station
    journal: Journal
    certificates: CertificateStore  # the CA store of the endpoint's operator (trust domain)
    version: str = "1.6"
    rpc: RpcConnection | None = None
    accepted: bool = False  # BootNotification accepted on the current connection
    # The last BootNotification status the CSMS gave (kept across reconnects); None: none yet.
    registration: str | None = None
    outbox_wake: asyncio.Event = field(default_factory=asyncio.Event)
    tx_wake: asyncio.Event = field(default_factory=asyncio.Event)
    status_wake: asyncio.Event = field(default_factory=asyncio.Event)
    heartbeat_wake: asyncio.Event = field(default_factory=asyncio.Event)
    restart: Callable[[str], Awaitable[None]] | None = None  # set by the endpoint: reset hook
    # The endpoints of this endpoint's operator, itself included (set by the gateway): what its
    # CSMS's diagnostics, logs and customer-data requests may see or change.
    operator_endpoints: frozenset[str] = frozenset()
    # Whether this endpoint's operator is the gateway's maintenance operator (firmware); set by
    # the gateway from the configuration. False until then: refusing is the safe default.
    maintainer: bool = False
    # Paces queued messages gateway-wide (bess_gateway.endpoint.pacing); None: unpaced (set by the
    # gateway).
    pacer: TokenBucket | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)  # spawned jobs, see spawn()
    closing: bool = False  # the jobs are being cancelled (link lost, endpoint stopping)
    # Trigger senders by requested message, for messages a block owns (e.g.
    # "LogStatusNotification"); a block registers its sender here when building its handlers.
    triggers: dict[str, Callable[[int | None], Awaitable[None]]] = field(default_factory=dict)
    # The CSMS URL to connect to instead of the configured one (a 2.0.1 network profile the
    # CSMS set); None: the configuration's.
    csms_url: str | None = None
    # The endpoint's services, built once by the version endpoint at construction.
    services: EndpointServices = field(init=False, repr=False)

    @property
    def online(self) -> bool:
        return self.rpc is not None and self.accepted

    @property
    def endpoint_id(self) -> str:
        return self.cfg.id

    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        if self.rpc is None:
            raise ConnectionError(f"{self.cfg.id}: not connected")
        return await self.rpc.call(action, payload)

    async def notify(self, action: str, payload: dict[str, Any]) -> None:
        """Send a CALL whose answer we do not use (Heartbeat, StatusNotification, ...).

        An answer that breaks the schema still says the CSMS got the message; the RPC layer has
        logged and counted it. Raising would end the connection's jobs, and the reconnect would
        resend into the same answer every few seconds for ever. CALLERRORs, timeouts and a lost
        link still raise: those are the caller's to judge.
        """
        try:
            await self.call(action, payload)
        except InvalidAnswer:
            pass

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any] | None:
        """Run a background job that outlives a handler; failures are logged, never lost.

        The job belongs to the endpoint: it is cancelled when the connection ends or the
        endpoint stops. Once that has begun (``closing``) nothing new may start: the coroutine
        is closed unrun (None is returned) rather than left to a task nobody would cancel.
        """
        if self.closing:
            coro.close()
            log.info("%s: %s not started: the endpoint is stopping", self.cfg.id, name)
            return None
        # The task runs the coroutine itself: cancelled before its first step, the coroutine is
        # still closed by the task (a wrapper coroutine would leave it never awaited).
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.cfg.id}:{name}")
        self.tasks.add(task)

        def done(task: asyncio.Task[Any]) -> None:
            self.tasks.discard(task)
            if task.cancelled():
                return
            exc = task.exception()  # retrieved here, so asyncio never reports it as lost
            if exc is not None:
                log.error("%s: %s failed", self.cfg.id, name, exc_info=exc)

        task.add_done_callback(done)
        return task

    async def cancel_jobs(self, *, for_good: bool = False) -> None:
        """Cancel the spawned jobs and wait until they have ended; none starts meanwhile, and
        with ``for_good`` (the endpoint stops) none ever again."""
        self.closing = True
        try:
            while self.tasks:
                jobs = list(self.tasks)
                for task in jobs:
                    task.cancel()
                await asyncio.gather(*jobs, return_exceptions=True)
                self.tasks.difference_update(jobs)
        finally:
            self.closing = for_good


def merge_handlers(*tables: dict[str, Any]) -> dict[str, Any]:
    """One handler table from the blocks' tables. An action is one block's: two blocks naming
    the same action is a wiring error (raised), never "the later one wins", so the order the
    blocks are listed in does not matter. A block that builds on another's handler is handed
    that handler explicitly (1.6 security's ChangeConfiguration delegates to provisioning's)."""
    table: dict[str, Any] = {}
    for block in tables:
        twice = table.keys() & block.keys()
        if twice:
            raise ValueError(f"actions handled by two blocks: {sorted(twice)}")
        table.update(block)
    return table


class EndpointBase:
    """The connection lifecycle of one endpoint; subclasses translate one OCPP version."""

    VERSION: ClassVar[str]
    SUBPROTOCOL: ClassVar[Subprotocol]
    # Status targets the reporter walks: 1.6 connector 0, 1, 2; 2.0.1 (evse, connector) pairs.
    STATUS_TARGETS: ClassVar[tuple[Any, ...]]
    # The context the version's blocks share (a version may add its own state to it).
    CONTEXT: ClassVar[type[Context]] = Context

    def __init__(
        self,
        cfg: EndpointConfig,
        station: Station,
        journal: Journal,
        *,
        backoff: Backoff | None = None,
        certificates: CertificateStore | None = None,
    ) -> None:
        self.cfg = cfg
        self.ctx = self.CONTEXT(cfg=cfg, station=station, journal=journal,
                                certificates=certificates or CertificateStore(
                                    operator_directory(journal.path.parent / "certs",
                                                       cfg.trust_domain)),
                                operator_endpoints=frozenset({cfg.id}), version=self.VERSION)
        self.backoff = backoff or Backoff(settings=station.settings)
        self.registration: str | None = None
        self.connected = asyncio.Event()
        self.booted = asyncio.Event()
        self.connects = 0
        self._last_status: dict[Any, Any] = {}
        # What the CSMS has answered for each status target (send_status): the gateway's last
        # report before an exit waits on this, not on what was merely sent.
        self.confirmed_status: dict[Any, Any] = {}
        # CALLERROR codes the CSMS refused a StatusNotification with, each logged once.
        self._status_refusals: set[str] = set()
        # When the last accepted connection ended (loop time); None: none has ended since the
        # statuses were last sent in full. A deliberate reconnect (reset, new credentials) sets
        # _status_all_next instead: it is no outage, the CSMS gets everything.
        self._offline_since: float | None = None
        self._status_all_next = True
        self._ws: ClientConnection | None = None
        # The CSMS -> station handlers, built at the first connection and kept (`handlers`).
        self._handler_table: dict[str, Any] | None = None
        self._reconnect_now = False
        self._going_away = False  # the gateway stops: no connection after the current one
        # How long an opening handshake may take; None = the message_timeout_s setting.
        self.open_timeout_s: float | None = None
        # The gateway swaps in a metered RpcConnection when metrics are on.
        self.rpc_factory: Callable[..., RpcConnection] = RpcConnection
        self.heartbeat_s = station.settings.int("heartbeat_interval_s")
        station.on_change(self.ctx.status_wake.set)
        station.settings.on_change(self._setting_changed)

    @property
    def id(self) -> str:
        return self.cfg.id

    # -- what a version says ---------------------------------------------------------------
    def _url(self) -> str:
        raise NotImplementedError

    def _ssl(self) -> ssl.SSLContext | None:
        raise NotImplementedError

    def _headers(self) -> dict[str, str]:
        raise NotImplementedError

    def _connect_failed(self, exc: BaseException) -> None:
        """A failed attempt (the security layer turns some into security events)."""

    def _handlers(self) -> dict[str, Any]:
        """The version's handler table (`merge_handlers` of its blocks); built once."""
        raise NotImplementedError

    def handlers(self) -> dict[str, Any]:
        """The handler table: built at the first connection, then the same for every one."""
        if self._handler_table is None:
            self._handler_table = self._handlers()
        return self._handler_table

    def _boot_payload(self) -> dict[str, Any]:
        raise NotImplementedError

    def _periodic(self) -> list[Coroutine[Any, Any, None]]:
        """The version's connection-long jobs besides heartbeat and status (outbox delivery)."""
        return []

    def _lifelong(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        """Jobs that run as long as the endpoint, connected or not (the meter sampler: offline
        samples queue in the outbox). Factories, so a job that fails is started again."""
        return []

    async def send_status(self, target: Any, *, force: bool = False) -> None:
        raise NotImplementedError

    def _offline_threshold_s(self) -> float | None:
        """Offline for longer than this, a reconnect reports every status; for less, only those
        that changed meanwhile (2.0.1 OCPPCommCtrlr.OfflineThreshold). None: every status on
        every reconnect (1.6 has no such key)."""
        return None

    # -- what the gateway asks of every endpoint -------------------------------------------
    def recover(self, records: list[Any]) -> None:
        """End the transactions the journal still holds open (cut by a crash or power loss)."""
        raise NotImplementedError

    def stop_all(self, reason: Any) -> None:
        """End every session (shutdown, reset)."""
        raise NotImplementedError

    def start_up(self) -> None:
        """Once, before the first connection: what must hold with or without a CSMS (stored
        charging profiles limit power from the start)."""
        self.refresh_schedules()

    def refresh_schedules(self) -> None:
        """Renew the core's schedules from the stored charging profiles (CSMS or not)."""

    def firmware_notify(self) -> Callable[[str], Awaitable[None]] | None:
        """How a firmware job kept from before a restart reports to this endpoint (1.6 keeps
        UpdateFirmware requests, maintenance.firmware); None: this version keeps none."""
        return None

    def shut_down(self) -> None:
        """Once, at gateway stop: nothing of the endpoint may touch core or journal after it."""

    # -- connection lifecycle --------------------------------------------------------------
    async def run(self) -> None:
        """Connect, serve, and reconnect forever (until cancelled); lifelong jobs alongside."""
        jobs = [asyncio.create_task(self._keep_running(job), name=f"{self.id}:lifelong")
                for job in self._lifelong()]
        try:
            await self._connect_forever()
        finally:
            for task in jobs:
                task.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
            # Jobs spawned between connections (an OnIdle reset) end with the endpoint too.
            await self.ctx.cancel_jobs(for_good=True)

    async def _keep_running(self, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        while True:
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: a lifelong job failed; restarting it", self.id)
            await asyncio.sleep(STATUS_RETRY_S)

    async def go_away(self) -> None:
        """Gateway shutdown: close the link with 1001 Going Away and connect no more.

        Before the endpoint's task is cancelled: a cancellation ends the `connect` block with
        an exception, and websockets closes a connection left by an exception with 1011
        Internal Error, which a CSMS logs as a station failure."""
        self._going_away = True
        if self._ws is not None:
            await self._ws.close(CloseCode.GOING_AWAY, GOING_AWAY_REASON)

    async def _connect_forever(self) -> None:
        settings = self.ctx.station.settings
        while not self._going_away:
            try:
                ping = settings.int("websocket_ping_interval_s") or None
                async with connect(
                    self._url(),
                    subprotocols=[self.SUBPROTOCOL],
                    additional_headers=self._headers(),
                    ssl=self._ssl(),
                    open_timeout=self.open_timeout_s or settings.int("message_timeout_s"),
                    ping_interval=ping,
                    ping_timeout=ping,
                    max_size=MAX_FRAME,
                    compression=None,
                ) as ws:
                    if self._going_away:  # connected as the gateway stops
                        await ws.close(CloseCode.GOING_AWAY, GOING_AWAY_REASON)
                    elif ws.subprotocol != self.SUBPROTOCOL:
                        log.error("%s: CSMS did not agree to %s (got %r); closing", self.id,
                                  self.SUBPROTOCOL, ws.subprotocol)
                        await ws.close(1002, f"{self.SUBPROTOCOL} required")
                    else:
                        await self._serve(ws)
            except asyncio.CancelledError:
                raise
            except (OSError, InvalidHandshake, InvalidStatus, TimeoutError,
                    ConnectionClosed) as exc:
                self._connect_failed(exc)
                log.warning("%s: connection to %s failed: %s", self.id, self._url(), exc)
            except Exception:
                log.exception("%s: endpoint error; reconnecting", self.id)
            if self._going_away:
                return
            if self._reconnect_now:
                self._reconnect_now = False
                continue
            await asyncio.sleep(self.backoff.next_delay())

    async def _serve(self, ws: ClientConnection) -> None:
        ctx = self.ctx
        self._ws = ws
        self.connects += 1
        rpc = self.rpc_factory(ws, self.VERSION, self.handlers(), name=self.id,
                               call_timeout=float(ctx.station.settings.int("message_timeout_s")),
                               validate_outgoing=os.environ.get(VALIDATE_OUTGOING_ENV) == "1",
                               before_send=lambda: ctx.journal.durable(ctx.endpoint_id))
        ctx.rpc = rpc
        self.connected.set()
        log.info("%s: connected to %s", self.id, self._url())
        reader = asyncio.create_task(rpc.run(), name=f"{self.id}:rpc")
        worker = asyncio.create_task(self._operate(), name=f"{self.id}:operate")
        try:
            done, _ = await asyncio.wait({reader, worker}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    exc = task.exception()
                    if isinstance(exc, BaseExceptionGroup):
                        # The TaskGroup of a connection ends with the link: that is no error.
                        _, exc = exc.split((ConnectionClosed, ConnectionError))
                    if exc is not None and not isinstance(exc, ConnectionClosed | ConnectionError):
                        log.error("%s: %s ended: %r", self.id, task.get_name(), exc)
        finally:
            if ctx.accepted and self._offline_since is None:
                self._offline_since = asyncio.get_running_loop().time()
            ctx.accepted = False
            ctx.rpc = None
            self.connected.clear()
            self.booted.clear()
            self._ws = None
            for task in (reader, worker):
                task.cancel()
            await asyncio.gather(reader, worker, return_exceptions=True)
            await ctx.cancel_jobs()
            log.info("%s: disconnected", self.id)

    async def _operate(self) -> None:
        """Boot until accepted, then run the connection's periodic work."""
        await self._boot_until_accepted()
        self.backoff.reset()
        if self._report_all_statuses():
            self._last_status.clear()  # the CSMS gets every current status once
        self._offline_since = None
        self._status_all_next = False
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._status_reporter())
            tg.create_task(self._heartbeat())
            for job in self._periodic():
                tg.create_task(job)

    async def _boot_until_accepted(self) -> None:
        while not self.ctx.accepted:
            resp = await self.ctx.call("BootNotification", self._boot_payload())
            if self._boot_answered(resp):
                return
            interval = int(resp.get("interval", 0)) or 30
            # Pending or Rejected: no other request of ours until the interval passes (1.6 4.2,
            # 2.0.1 B02/B03); the CSMS may still talk to us meanwhile (Pending), and when it
            # accepts a BootNotification it triggered, the wait ends there (`_boot_answered`).
            log.info("%s: boot %s; retrying in %ss", self.id, resp["status"], interval)
            await wait_event(self.booted, interval)

    def _boot_answered(self, resp: dict[str, Any]) -> bool:
        """Any BootNotification's answer, ours or one the CSMS triggered; True if Accepted.

        The CSMS accepts the station whichever boot it answers Accepted (a Pending station is
        typically accepted through TriggerMessage(BootNotification)): registration, statuses
        and the heartbeat interval of that answer take effect at once, not at our next retry.
        """
        status = resp["status"]
        self.registration = self.ctx.registration = status
        if status != "Accepted":
            return False
        interval = int(resp.get("interval", 0))
        if interval > 0:
            self._apply_heartbeat_interval(interval)
        if not self.ctx.accepted:
            self.ctx.accepted = True
            self.booted.set()
            log.info("%s: boot accepted (heartbeat %ss)", self.id, interval)
        return True

    def _report_all_statuses(self) -> bool:
        """After this boot, every status (True) or only those changed while offline (False).

        What `_last_status` holds was confirmed by the CSMS before the link went, so keeping it
        sends exactly the statuses that differ now."""
        threshold = self._offline_threshold_s()
        if self._status_all_next or self._offline_since is None or threshold is None:
            return True
        return asyncio.get_running_loop().time() - self._offline_since > threshold

    def _apply_heartbeat_interval(self, interval: int) -> None:
        """The CSMS owns the heartbeat interval it sends at boot, even outside the setting's range.

        It is stored as the heartbeat setting when in range (or storable); otherwise it only runs.
        """
        try:
            self.ctx.station.settings.set("heartbeat_interval_s", str(interval))
        except SettingError:
            pass
        self.heartbeat_s = interval
        self.ctx.heartbeat_wake.set()

    def _setting_changed(self, name: str) -> None:
        if name == "heartbeat_interval_s":
            self.heartbeat_s = self.ctx.station.settings.int("heartbeat_interval_s")
            self.ctx.heartbeat_wake.set()
        elif name == "message_timeout_s" and self.ctx.rpc is not None:
            # From the next CALL on, not only after a reconnect.
            self.ctx.rpc.call_timeout = float(self.ctx.station.settings.int(name))

    async def _heartbeat(self) -> None:
        while True:
            self.ctx.heartbeat_wake.clear()
            if await wait_event(self.ctx.heartbeat_wake, self.heartbeat_s):
                continue  # interval changed: start a fresh period
            await self.send_heartbeat()

    async def send_heartbeat(self) -> None:
        try:
            await self.ctx.notify("Heartbeat", {})
        except (CallErrorReceived, TimeoutError) as exc:
            log.warning("%s: Heartbeat failed: %s", self.id, exc)

    async def send_boot(self) -> None:
        """A BootNotification the CSMS triggered (TriggerMessage)."""
        self._boot_answered(await self.ctx.call("BootNotification", self._boot_payload()))

    async def _notify_status(self, target: Any, report: Any, payload: dict[str, Any]) -> None:
        """Send the StatusNotification `payload` telling the CSMS `report` for `target`.

        A CALLERROR is the CSMS's final answer (a CSMS that does not support the message, or
        this status): the status counts as reported, so the next change goes out and this one
        is not repeated. So is an answer that breaks the schema (the RPC layer logs and counts
        it): the CSMS got the status, and the answer carries nothing we use. One that got no
        answer (timeout, link gone) is sent again.
        """
        self._last_status[target] = report
        try:
            await self.ctx.notify("StatusNotification", payload)
            self.confirmed_status[target] = report
        except CallErrorReceived as exc:
            # A final answer too: the gateway's last report before an exit need not wait for it.
            self.confirmed_status[target] = report
            if exc.code not in self._status_refusals:
                self._status_refusals.add(exc.code)
                log.warning("%s: %s; statuses it refuses so are not sent again (logged once "
                            "per error code)", self.id, exc)
            else:
                log.debug("%s: %s", self.id, exc)
        except TimeoutError as exc:
            self._forget_status(target, report)
            log.warning("%s: StatusNotification unanswered, sending it again: %s", self.id, exc)
        except BaseException:
            # Lost with the link: a reconnect within OfflineThreshold must still send it.
            self._forget_status(target, report)
            raise

    def _forget_status(self, target: Any, report: Any) -> None:
        # Only if no later status of the target was sent meanwhile (a trigger runs alongside).
        if self._last_status.get(target) is report:
            del self._last_status[target]

    async def _status_reporter(self) -> None:
        while True:
            self.ctx.status_wake.clear()
            for target in self.STATUS_TARGETS:
                await self.send_status(target)
            # Wakes come on changes only; a notification that was lost is tried again in 1 s.
            unsent = any(t not in self._last_status for t in self.STATUS_TARGETS)
            await wait_event(self.ctx.status_wake, STATUS_RETRY_S if unsent else None)

    async def _reconnect(self, reason: str) -> None:
        """Close the link and connect again at once (new credentials, reset, ...)."""
        self._reconnect_now = True
        self._status_all_next = True
        ws, rpc = self._ws, self.ctx.rpc
        if ws is None:
            return
        log.info("%s: reconnecting: %s", self.id, reason)
        # Let a CALL of ours in flight get its answer, and start no new one, before closing: a
        # CSMS whose answer to it fails on the closed socket may drop what we sent just before
        # the close (e.g. the ChangeConfiguration.conf that asked for this reconnect).
        if rpc is None:
            await ws.close(1000, reason[:120])
            return
        async with rpc.calls_held(RECONNECT_GRACE_S):
            await ws.close(1000, reason[:120])

    async def _drain_outbox(self, timeout_s: float = 2.5) -> None:
        """Give queued messages a moment to leave while the link is still up (reset)."""
        for _ in range(int(timeout_s / 0.05)):
            if self.ctx.journal.outbox.depth(self.id) == 0:
                break
            await asyncio.sleep(0.05)
